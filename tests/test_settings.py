from pathlib import Path

import pytest

from service.settings import BUILTIN_EVENT_TYPES, Settings, SettingsError, describe, load_settings


def test_defaults_need_no_configuration():
    s = load_settings(environ={})
    assert s.data_dir == Path("data")
    assert s.sqlalchemy_url.startswith("sqlite:///") and s.sqlalchemy_url.endswith("data/recsys.db")
    assert s.index_path == Path("data") / "indexes"
    assert s.event_types == BUILTIN_EVENT_TYPES


def test_environment_then_overrides_win_in_order():
    env = {"RECSYS_DATA_DIR": "/srv/recsys", "RECSYS_RECALL_FLOOR": "0.9", "RECSYS_CLIP_ENABLED": "false",
           "RECSYS_CUSTOM_EVENT_TYPES": '["share", "bookmark"]', "RECSYS_EVENT_WEIGHTS": '{"view": 0.5}'}
    s = load_settings(environ=env)
    assert s.data_dir == Path("/srv/recsys") and s.recall_floor == 0.9 and s.clip_enabled is False
    assert s.event_types[-2:] == ("share", "bookmark")
    assert s.event_weights == {"view": 0.5}
    s2 = load_settings({"recall_floor": 0.99, "data_dir": "/tmp/x"}, environ=env)
    assert s2.recall_floor == 0.99 and s2.data_dir == Path("/tmp/x")


def test_unset_environment_is_ignored_and_other_prefixes_too():
    s = load_settings(environ={"DATA_DIR": "/nope", "RECSYS_UNKNOWN_THING": "1"})
    assert s == Settings()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"recall_floor": "high"}, "recall_floor"),
        ({"recall_floor": 1.5}, "recall_floor"),
        ({"encode_batch_size": 0}, "encode_batch_size"),
        ({"clip_enabled": "maybe"}, "clip_enabled"),
        ({"custom_event_types": '["bad type!"]'}, "custom_event_types"),
        ({"custom_event_types": '{"a": 1}'}, "custom_event_types"),
        ({"no_such_setting": 1}, "no_such_setting"),
        # The training stage, the behaviour window and the cold slot (operator input, validated too).
        ({"train_families": '["ease", "magic"]'}, "train_families"),
        ({"train_memory_budget_mb": 0}, "train_memory_budget_mb"),
        ({"train_memory_budget_mb": "nan"}, "train_memory_budget_mb"),
        ({"train_eval_users": 0}, "train_eval_users"),
        ({"train_gate_tolerance": 1.5}, "train_gate_tolerance"),
        ({"train_gate_tolerance": -0.1}, "train_gate_tolerance"),
        ({"behaviour_max_events": 0}, "behaviour_max_events"),
        ({"cold_item_slots": -1}, "cold_item_slots"),
        ({"cold_item_rank": 0}, "cold_item_rank"),
        ({"cold_item_rank": 201}, "cold_item_rank"),  # beyond the content candidates gathered
        ({"cold_item_rank": "-3"}, "cold_item_rank"),
        ({"cold_item_rank": "twenty"}, "cold_item_rank"),
        ({"cold_item_rank": "²"}, "cold_item_rank"),  # a digit to str.isdigit, not to int()
        ({"cold_item_rank": "20\x00"}, "cold_item_rank"),
        ({"cold_item_rank": "\ud800"}, "cold_item_rank"),
        ({"cold_item_rank": "9" * 400}, "cold_item_rank"),
        ({"cold_item_warm_tolerance": "nan"}, "cold_item_warm_tolerance"),
        ({"cold_item_warm_tolerance": 1.0}, "cold_item_warm_tolerance"),
        ({"cold_item_warm_tolerance": -0.1}, "cold_item_warm_tolerance"),
        ({"profile_max_seeds": 0}, "profile_max_seeds"),
        ({"content_scoring": "pow5"}, "content_scoring"),
        ({"profile_max_seeds": 100_000}, "profile_max_seeds"),
        ({"profile_max_seeds": "many"}, "profile_max_seeds"),
        ({"learned_blend": "sometimes"}, "learned_blend"),
        # A worker's threads.
        ({"background_niceness": -1}, "background_niceness"),
        ({"background_niceness": 20}, "background_niceness"),
        ({"background_niceness": "nan"}, "background_niceness"),
        ({"background_niceness": True}, "background_niceness"),
        ({"background_niceness": 10**30}, "background_niceness"),
        # Fine-tuning.
        ({"finetune_epochs": 0}, "finetune_epochs"),
        ({"finetune_batch_size": -1}, "finetune_batch_size"),
        ({"finetune_learning_rate": "nan"}, "finetune_learning_rate"),
        ({"finetune_learning_rate": 2}, "finetune_learning_rate"),
        ({"finetune_clip_learning_rate": "inf"}, "finetune_clip_learning_rate"),
        ({"finetune_clip_learning_rate": 0}, "finetune_clip_learning_rate"),
        ({"finetune_clip": "perhaps"}, "finetune_clip"),
        ({"finetune_window_days": "inf"}, "finetune_window_days"),
        ({"finetune_gate_tolerance": 1}, "finetune_gate_tolerance"),
        ({"finetune_min_new_events": 0}, "finetune_min_new_events"),
        ({"finetune_on_rebuild": "perhaps"}, "finetune_on_rebuild"),
        # Search: the query encoder and the query log.
        ({"query_backend": "tensorrt"}, "query_backend"),
        ({"query_backend": "onnx\x00"}, "query_backend"),
        ({"query_log_size": -1}, "query_log_size"),
        ({"query_log_size": 10**18}, "query_log_size"),
        ({"query_log_size": "inf"}, "query_log_size"),
    ],
)
def test_bad_values_name_the_setting(overrides, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(overrides, environ={})


def test_describe_lists_every_setting_with_its_variable():
    rows = describe()
    names = {r[0] for r in rows}
    assert {"data_dir", "database_url", "text_model", "clip_pretrained", "recall_floor"} <= names
    assert all(env == "RECSYS_" + name.upper() for name, env, _ in rows)
