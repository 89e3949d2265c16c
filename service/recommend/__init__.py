"""Recommendation use cases: ranking arithmetic, behaviour, the recommender and its offline evaluation."""
