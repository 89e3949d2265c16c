"""Hand-written vocabularies the demo generator composes the catalog from.

Everything here was written for this project (brands and models are invented), so the
generated catalog can be redistributed under the project's Apache-2.0 licence.

Products: per category, brands, model names, colors, sub-types (each with a title noun,
title adjectives paired with the feature phrase that justifies them, use cases, features,
tags and a price range), material/construction sentences (a plain string fits every
sub-type; a ``(sentence, {"only": [sub-types], "not_adj": [title adjectives]})`` pair only
fits where the condition holds) and color sentences (the same two forms).
Articles: per category, three themes (choose / care / use), each a pool of sentences plus
three titles with their own lead sentence; an article is its lead plus 2-4 pool sentences
(always including the ones its title names, kept in pool order).
"""

from __future__ import annotations

# name -> RGB. Names are what appear in titles, text, tags and the ``color`` attribute.
COLORS: dict[str, tuple[int, int, int]] = {
    "black": (34, 34, 38),
    "charcoal": (66, 70, 78),
    "slate gray": (108, 122, 138),
    "silver": (178, 182, 188),
    "white": (238, 236, 230),
    "cream": (238, 226, 196),
    "navy": (30, 44, 92),
    "cobalt blue": (20, 78, 178),
    "sky blue": (104, 168, 222),
    "teal": (0, 124, 128),
    "forest green": (34, 104, 58),
    "sage green": (140, 170, 128),
    "olive": (108, 112, 48),
    "lime": (150, 196, 40),
    "yellow": (242, 196, 28),
    "mustard": (204, 158, 36),
    "orange": (238, 118, 30),
    "coral": (242, 108, 88),
    "red": (196, 34, 40),
    "burgundy": (118, 26, 46),
    "pink": (232, 128, 166),
    "lavender": (166, 146, 208),
    "purple": (98, 52, 140),
    "terracotta": (196, 98, 66),
    "brown": (118, 78, 44),
    "walnut": (92, 58, 34),
    "tan": (196, 156, 106),
    "sand": (214, 192, 150),
    "brass": (184, 146, 58),
}

FIRST_NAMES = [
    "Maya", "Tom", "Priya", "Jonas", "Elena", "Sam", "Aiko", "Luis", "Nora", "Kwame",
]
LAST_NAMES = [
    "Lindqvist", "Okafor", "Raman", "Weber", "Costa", "Whitaker", "Tanaka", "Moreno",
    "Fischer", "Mensah",
]

# Opening sentences shared by every category. {a_adj} is the adjective with its article.
OPENERS = [
    "The {model} is {a_adj} {noun} from {brand}, made for {use}.",
    "Built for {use}, the {model} from {brand} is {a_adj} {noun}.",
    "If you want {a_adj} {noun} for {use}, the {brand} {model} is worth a look.",
    "{brand} designed the {model} as {a_adj} {noun} for {use}.",
    "Meet the {model}, {a_adj} {noun} by {brand} for {use}.",
]
# ``{adjfeat}`` is the feature behind the title adjective; f1..f3 are other features.
FEATURE_SENTENCES = [
    "It has {adjfeat}, along with {f1} and {f2}.",
    "Key details are {adjfeat}, {f1} and {f2}.",
    "The standout is {adjfeat}, backed up by {f1}.",
    "Look closer and you will find {adjfeat}, {f1} and {f2}.",
    "On top of {adjfeat}, it adds {f1} and {f2}.",
    "Expect {adjfeat} and {f1}, finished off with {f2}.",
]

PRODUCT_CATEGORIES: list[dict] = [
    {
        "slug": "running-shoes",
        "label": "running shoes",
        "brands": ["Stridewell", "Northpeak", "Kinetra", "Fellrun Co.", "Marlow Athletic"],
        "models": [
            "Trailblaze", "Ridgeline", "Tempo Glide", "Cloudstep", "Summit Dash", "Roadline",
            "Pacer", "Fellrunner", "Swiftcurrent", "Mistral", "Longhaul", "Quarry",
            "Switchback", "Skyline",
        ],
        "colors": [
            "black", "white", "navy", "cobalt blue", "sky blue", "teal", "forest green",
            "lime", "orange", "coral", "red", "slate gray", "purple",
        ],
        "accents": ["white", "black", "lime", "orange", "gray", "yellow"],
        "subtypes": [
            {
                "key": "trail", "noun": "trail running shoe", "price": (95, 185),
                "adjs": [
                    ("waterproof", "a waterproof, breathable membrane that keeps feet dry in wet grass and shallow puddles"),
                    ("grippy", "5 mm multidirectional lugs that bite into mud and loose gravel"),
                    ("lightweight", "a stripped-back build that keeps it under 280 g per shoe"),
                    ("cushioned", "a thick foam stack that softens long, rocky descents"),
                ],
                "uses": [
                    "technical mountain trails", "muddy forest loops",
                    "long days on rocky singletrack", "ultra-distance trail races",
                ],
                "features": [
                    "a rock plate that shields the forefoot from sharp stones",
                    "a gusseted tongue that keeps grit and pine needles out",
                    "a reinforced rubber toe bumper",
                    "a sticky rubber outsole that holds on wet rock",
                    "a lace garage to tuck away loose laces",
                    "gaiter attachment points at the heel",
                ],
                "tags": ["running", "trail", "outdoor"],
            },
            {
                "key": "road", "noun": "road running shoe", "price": (85, 165),
                "adjs": [
                    ("cushioned", "a soft, bouncy midsole foam that takes the sting out of pavement"),
                    ("lightweight", "a trimmed-down upper that weighs about 240 g"),
                    ("breathable", "an open engineered mesh that vents heat on summer runs"),
                    ("durable", "a hard-wearing rubber outsole rated for about 800 km of pavement"),
                ],
                "uses": [
                    "daily training miles on pavement", "easy recovery runs",
                    "half-marathon training blocks", "city running and run commuting",
                ],
                "features": [
                    "a rocker-shaped sole that rolls smoothly from heel to toe",
                    "a plush padded heel collar",
                    "reflective details for early-morning runs",
                    "a roomy forefoot that lets toes splay naturally",
                    "a removable molded insole",
                ],
                "tags": ["running", "road", "daily-trainer"],
            },
            {
                "key": "racing", "noun": "racing shoe", "price": (150, 240),
                "adjs": [
                    ("carbon-plated", "a full-length carbon plate for a snappy toe-off"),
                    ("featherweight", "a race-day build of just 190 g"),
                    ("responsive", "a high-rebound foam core that returns energy at speed"),
                ],
                "uses": [
                    "race day from 5K to the marathon", "track sessions and tempo runs",
                    "fast interval workouts",
                ],
                "features": [
                    "a thin, translucent mesh upper",
                    "a minimal heel counter",
                    "an aggressive forward rocker",
                    "thin, flat laces that stay tied",
                    "a grippy forefoot rubber patch",
                ],
                "tags": ["running", "road", "racing", "speed"],
            },
            {
                "key": "stability", "noun": "stability running shoe", "price": (110, 175),
                "adjs": [
                    ("supportive", "a firmer medial post that limits the foot rolling inward"),
                    ("wide-fit", "a roomy toe box and a wide platform for broad feet"),
                    ("cushioned", "generous cushioning paired with a stable base"),
                ],
                "uses": [
                    "runners who overpronate", "long, steady mileage",
                    "heavier runners who want support",
                ],
                "features": [
                    "guide rails on both sides of the heel",
                    "a firm, stable heel counter",
                    "a broad, flat base for planted landings",
                    "a padded tongue that spreads lace pressure",
                ],
                "tags": ["running", "road", "stability", "support"],
            },
        ],
        "materials": [
            "The upper is a double-layer engineered mesh that stays breathable without stretching out.",
            "A recycled polyester knit upper wraps the foot like a sock and dries quickly after rain.",
            "The midsole uses a nitrogen-infused EVA foam that stays springy in cold weather.",
            "Its carbon rubber outsole is placed only where shoes wear fastest, which keeps the weight down.",
            "Synthetic overlays around the midfoot lock the heel in place on cambered roads and side slopes.",
            "The heel-to-toe drop is a moderate 6 mm, a good middle ground for most runners.",
            ("An 8 mm drop and a firm heel counter make the switch from older trainers easy.", {"only": ["road", "stability", "trail"]}),
            "A TPU heel clip and a molded sockliner keep the fit secure when the pace picks up.",
        ],
        "color_sentences": [
            "This colorway is {color} with {accent} accents.",
            "It comes in {color} with {accent} laces and trim.",
            "The version shown is {color}, with {accent} laces on a white midsole.",
        ],
    },
    {
        "slug": "running-socks",
        "label": "running socks",
        "brands": ["Stridewell", "Fellrun Co.", "Loopstitch", "Kinetra", "Merrow & Finch"],
        "models": [
            "Tailwind", "Blister Guard", "Roadrunner", "Peak", "Fellside", "Contour",
            "Cadence", "Stride", "Footnote", "Loam", "Drystone", "Kestrel",
        ],
        "colors": [
            "black", "white", "charcoal", "navy", "teal", "forest green", "lime", "orange",
            "coral", "pink", "purple", "mustard",
        ],
        "accents": ["gray", "white", "black", "orange", "lime", "yellow"],
        "subtypes": [
            {
                "key": "trail", "noun": "crew-height trail running sock", "price": (16, 26),
                "adjs": [
                    ("merino", "a merino wool blend that regulates temperature and resists odor"),
                    ("cushioned", "extra terry loops under the heel and forefoot"),
                    ("quick-dry", "a fast-drying synthetic knit that sheds water after stream crossings"),
                ],
                "uses": ["muddy trail runs", "long days in trail shoes", "cold morning runs"],
                "features": [
                    "a higher cuff that keeps grit and seeds out of the shoe",
                    "a reinforced heel and toe",
                    "a seamless toe closure that prevents rubbing",
                    "a ribbed arch band that stops the sock twisting",
                ],
                "tags": ["running", "trail", "outdoor", "blister-prevention"],
            },
            {
                "key": "no-show", "noun": "no-show running sock", "price": (12, 20),
                "adjs": [
                    ("ultralight", "a thin, single-layer knit that fits snug racing shoes"),
                    ("anti-blister", "a twin-layer construction that lets the layers slide instead of your skin"),
                    ("breathable", "mesh panels across the top of the foot"),
                ],
                "uses": ["road races", "summer tempo runs", "treadmill sessions"],
                "features": [
                    "a silicone heel tab that stops the sock slipping down",
                    "left- and right-specific anatomical shaping",
                    "a flat-knit toe seam",
                    "a light cushion strip under the forefoot",
                ],
                "tags": ["running", "road", "racing", "blister-prevention"],
            },
            {
                "key": "compression", "noun": "compression running sock", "price": (28, 45),
                "adjs": [
                    ("graduated", "graduated compression that is firmest at the ankle"),
                    ("knee-high", "a knee-high cut that supports the whole calf"),
                ],
                "uses": ["marathon training", "recovery after long runs", "long-haul travel"],
                "features": [
                    "an arch band that supports the midfoot",
                    "a soft, non-binding top band",
                    "light padding over the Achilles tendon",
                    "a size chart based on calf measurement",
                ],
                "tags": ["running", "recovery", "compression"],
            },
            {
                "key": "quarter", "noun": "quarter-length running sock", "price": (12, 22),
                "adjs": [
                    ("everyday", "a durable nylon-rich knit made to survive weekly washing"),
                    ("reflective", "a reflective strip on the cuff for running after dark"),
                    ("cushioned", "medium cushioning from heel to toe"),
                ],
                "uses": ["everyday road running", "gym sessions", "walking and errands"],
                "features": [
                    "a padded tab that protects the Achilles",
                    "a seamless toe",
                    "a Y-shaped heel pocket that stops bunching",
                    "ventilation channels over the instep",
                ],
                "tags": ["running", "road", "daily-trainer"],
            },
        ],
        "materials": [
            "The yarn is 56% merino wool, 40% nylon and 4% elastane, so it stays soft but keeps its shape after many washes.",
            "It is knitted from recycled nylon with a touch of elastane for a snug, wrinkle-free fit.",
            "Moisture-wicking polyester pulls sweat away from the skin and dries within an hour.",
            "A Tencel and nylon blend feels cool against the skin on hot days.",
            "The knit is denser under the ball of the foot, where most runners blister first.",
            "Flat toe seams and a deep heel pocket keep the sock from bunching inside the shoe.",
        ],
        "color_sentences": [
            "It is knitted in {color} with a {accent} stripe at the cuff.",
            "This pair is {color} with a {accent} ribbed cuff.",
            "The colorway is {color}, finished with a {accent} cuff.",
        ],
    },
    {
        "slug": "rain-jackets",
        "label": "rain jackets",
        "brands": ["Northpeak", "Drizzle & Co.", "Fernway", "Kestrel Outdoor", "Halden"],
        "models": [
            "Stormline", "Cloudburst", "Squall", "Drift", "Torrent", "Monsoon", "Skerry",
            "Fjord", "Baltic", "Overcast", "Headwind", "Cairn", "Downpour",
        ],
        "colors": [
            "red", "navy", "yellow", "olive", "black", "orange", "teal", "forest green",
            "cobalt blue", "burgundy", "slate gray", "sky blue",
        ],
        "accents": ["black", "gray", "white", "orange"],
        "subtypes": [
            {
                "key": "hardshell", "noun": "hardshell rain jacket", "price": (220, 420), "shape": "hardshell",
                "adjs": [
                    ("waterproof", "a fully taped 3-layer membrane rated to 20,000 mm"),
                    ("alpine", "a helmet-compatible hood and high hand pockets that clear a harness"),
                    ("storm-proof", "a high collar and a stiffened hood peak that shut out wind-driven rain"),
                ],
                "uses": [
                    "multi-day treks in changeable mountain weather", "winter hillwalking",
                    "coastal walks and sailing",
                ],
                "features": [
                    "pit zips for dumping heat on steep climbs",
                    "water-resistant zippers",
                    "adjustable cuffs with soft tabs",
                    "a drawcord hem that seals out drafts",
                ],
                "tags": ["outdoor", "hiking", "waterproof", "mountain"],
            },
            {
                "key": "packable", "noun": "packable rain jacket", "price": (110, 230), "shape": "packable",
                "adjs": [
                    ("ultralight", "a 2.5-layer fabric that brings the weight down to 190 g"),
                    ("stowable", "a chest pocket that doubles as a stuff sack"),
                    ("stretch", "a stretchy face fabric that moves with you"),
                ],
                "uses": ["trail running in showers", "fast hikes", "travel and festivals"],
                "features": [
                    "an elasticated hood that stays put when running",
                    "a single chest pocket",
                    "thumb loops on the cuffs",
                    "a reflective logo on the back",
                ],
                "tags": ["outdoor", "running", "trail", "waterproof", "lightweight"],
            },
            {
                "key": "city", "noun": "city raincoat", "price": (140, 290), "shape": "long",
                "adjs": [
                    ("longline", "a longer cut that covers the hips and the top of the thighs"),
                    ("insulated", "a light synthetic insulation layer for cold, wet commutes"),
                    ("breathable", "a breathable membrane that does not turn clammy on a busy day"),
                ],
                "uses": ["rainy city walks", "cycling commutes", "dog walks on wet evenings"],
                "features": [
                    "a two-way front zip",
                    "a hood that rolls into the collar",
                    "an inner pocket sized for a tablet",
                    "reflective trim on the back and cuffs",
                    "press-stud storm flap over the zip",
                ],
                "tags": ["commuting", "city", "waterproof"],
            },
        ],
        "materials": [
            "The face fabric is ripstop nylon with a PFC-free water-repellent finish, so rain beads and rolls off.",
            "Every seam is taped from the inside, which stops water creeping through the stitch holes.",
            ("A soft brushed lining keeps it from feeling clammy against bare arms.", {"only": ["city"]}),
            ("The recycled polyester shell has a little stretch, which makes it comfortable with a pack on.", {"only": ["hardshell", "packable"]}),
            "A breathable membrane lets sweat vapor escape while blocking wind-driven rain.",
            "The fabric is rated at 15,000 mm waterproof and 15,000 g/m2 breathable, solid numbers for all-day rain.",
        ],
        "color_sentences": [
            "This one is {color}, easy to spot on a gray hillside.",
            "It comes in {color} with {accent} zip pulls.",
            "The {color} shell has {accent} taped seams visible inside.",
        ],
    },
    {
        "slug": "backpacks",
        "label": "backpacks",
        "brands": ["Northpeak", "Halden", "Packwright", "Urbanfold", "Fernway"],
        "models": [
            "Ridgeback", "Daytripper", "Wayfarer", "Basecamp", "Switch", "Roamer", "Alpenglow",
            "Transit", "Scout", "Longview", "Tarn", "Nomad", "Ledger", "Pathfinder",
        ],
        "colors": [
            "black", "charcoal", "olive", "navy", "orange", "red", "teal", "tan", "forest green",
            "mustard", "sky blue",
        ],
        "accents": ["black", "gray", "orange", "tan"],
        "subtypes": [
            {
                "key": "daypack", "noun": "hiking daypack", "price": (70, 150), "shape": "daypack",
                "adjs": [
                    ("24-liter", "24 liters of space for water, lunch and a spare layer"),
                    ("ventilated", "a suspended mesh back panel that leaves a gap for air to flow"),
                    ("lightweight", "a frameless build that weighs under 700 g"),
                ],
                "uses": ["day hikes", "summer trail days", "family walks in the hills"],
                "features": [
                    "a hydration sleeve and hose port",
                    "hip-belt pockets for snacks and a phone",
                    "trekking pole loops",
                    "an integrated rain cover in the base",
                    "a stretch front pocket for a wet jacket",
                ],
                "tags": ["outdoor", "hiking", "trail"],
            },
            {
                "key": "commuter", "noun": "commuter backpack", "price": (80, 190), "shape": "commuter",
                "adjs": [
                    ("laptop", "a padded sleeve for a 16-inch laptop that keeps it off the ground"),
                    ("roll-top", "a roll-top closure that seals out rain"),
                    ("minimalist", "a clean, low-profile shape without dangling straps"),
                ],
                "uses": [
                    "daily commutes by bike or train", "office days",
                    "carrying a laptop and gym kit",
                ],
                "features": [
                    "a luggage pass-through strap",
                    "a quick-access top pocket for keys and earbuds",
                    "a clamshell main compartment that opens flat",
                    "reflective tabs for cycling at night",
                    "a hidden back pocket for a passport",
                ],
                "tags": ["commuting", "city", "laptop", "office"],
            },
            {
                "key": "trekking", "noun": "trekking pack", "price": (160, 290), "shape": "trekking",
                "adjs": [
                    ("45-liter", "45 liters of capacity for hut-to-hut trips"),
                    ("adjustable", "an adjustable back length for a precise fit"),
                ],
                "uses": [
                    "multi-day hut-to-hut treks", "overnight camping trips",
                    "long-distance trails",
                ],
                "features": [
                    "a padded hip belt that carries most of the load",
                    "a sleeping-bag compartment with a separate zip",
                    "a floating lid with two pockets",
                    "side compression straps",
                ],
                "tags": ["outdoor", "hiking", "camping", "mountain"],
            },
            {
                "key": "vest", "noun": "running vest pack", "price": (90, 170), "shape": "vest",
                "adjs": [
                    ("12-liter", "12 liters of storage for mandatory race kit"),
                    ("bounce-free", "a wraparound fit with two sternum straps that stops bouncing"),
                ],
                "uses": ["ultra-marathons", "long trail runs", "fastpacking"],
                "features": [
                    "two 500 ml soft flasks in the chest pockets",
                    "a stretch mesh back pocket for a rain jacket",
                    "a whistle on the sternum strap",
                    "pole holders on the sides",
                ],
                "tags": ["running", "trail", "outdoor", "hydration"],
            },
        ],
        "materials": [
            "The body is 210-denier recycled nylon with a polyurethane coating that shrugs off light rain.",
            "A 500-denier Cordura base resists scuffs when the pack is dropped on rough ground.",
            ("The shoulder straps use perforated foam covered in soft air mesh.", {"only": ["daypack", "commuter", "trekking"]}),
            ("Waxed canvas panels and leather pulls give it a look that works at the office as well as outdoors.", {"only": ["commuter", "daypack"]}),
            ("An aluminum stay and a plastic frame sheet transfer the weight to the hips.", {"only": ["trekking"]}),
            "Heavy-duty zippers and bar-tacked stress points are made for years of use.",
            ("The vest is cut from a stretchy, quick-drying mesh that hugs the torso without chafing.", {"only": ["vest"]}),
        ],
        "color_sentences": [
            "The pack comes in {color} with {accent} webbing.",
            "This version is {color}, with {accent} zip pulls.",
            "It is made in {color} fabric with {accent} straps.",
        ],
    },
    {
        "slug": "kitchen-knives",
        "label": "kitchen knives",
        "brands": ["Hakata Forge", "Ironleaf", "Coldwater Cutlery", "Takumi Works", "Ashgrove"],
        "models": [
            "Kaze", "Meridian", "Pro Series", "Heritage", "Ember", "Hikari", "Tsuki", "Cascade",
            "Foundry", "Graphite", "Classic", "Orchard", "Harbor", "Sora",
        ],
        "colors": ["black", "walnut", "olive", "navy", "red", "charcoal", "tan", "brown", "teal"],
        "accents": ["brass", "steel", "copper"],
        "subtypes": [
            {
                "key": "chef", "noun": "chef's knife", "price": (60, 220), "shape": "chef",
                "adjs": [
                    ("8-inch", "an 8-inch (20 cm) blade long enough for a whole squash"),
                    ("forged", "a full tang forged from a single piece of steel"),
                    ("carbon steel", "a carbon steel blade that takes a razor edge"),
                ],
                "uses": [
                    "everyday chopping, slicing and dicing",
                    "home cooks who want one knife for almost everything",
                ],
                "features": [
                    "a bolster that protects your fingers",
                    "a curved belly for a rocking cut",
                    "a spine rounded where your fingers pinch the blade",
                    "a balance point just in front of the handle",
                ],
                "tags": ["cooking", "knife", "chef-knife"],
            },
            {
                "key": "santoku", "noun": "santoku knife", "price": (55, 190), "shape": "santoku",
                "adjs": [
                    ("hollow-edge", "a row of hollow dimples that stop slices sticking to the blade"),
                    ("Damascus", "layered Damascus cladding with a visible ripple pattern"),
                    ("carbon steel", "a carbon steel core that sharpens easily"),
                ],
                "uses": [
                    "fine vegetable prep", "slicing fish and boneless meat",
                    "push cutting on a board",
                ],
                "features": [
                    "a flat edge profile for clean, straight cuts",
                    "a sheepsfoot tip for precise work",
                    "a thin grind behind the edge",
                    "a light, agile feel in the hand",
                ],
                "tags": ["cooking", "knife", "japanese"],
            },
            {
                "key": "paring", "noun": "paring knife", "price": (18, 70), "shape": "paring",
                "adjs": [
                    ("3.5-inch", "a short 3.5-inch blade that is easy to steer"),
                    ("bird's beak", "a curved blade for peeling round fruit"),
                ],
                "uses": [
                    "peeling and trimming", "hulling strawberries and coring tomatoes",
                    "small jobs done in the hand",
                ],
                "features": [
                    "a pointed tip for scoring and coring",
                    "a compact handle for fine control",
                    "a blade guard for drawer storage",
                ],
                "tags": ["cooking", "knife", "prep"],
            },
            {
                "key": "bread", "noun": "bread knife", "price": (35, 120), "shape": "bread",
                "adjs": [
                    ("serrated", "deep scalloped serrations that grip crusty loaves"),
                    ("offset", "an offset handle that keeps knuckles off the board"),
                ],
                "uses": [
                    "slicing sourdough and baguettes", "cutting cakes into even layers",
                    "ripe tomatoes and citrus",
                ],
                "features": [
                    "a 10-inch blade that spans a wide loaf",
                    "a rounded tip",
                    "serrations that rarely need sharpening",
                ],
                "tags": ["cooking", "knife", "baking"],
            },
        ],
        "materials": [
            ("The blade is VG-10 stainless steel hardened to 60 HRC, so it holds a keen edge for months.", {"only": ["chef", "santoku", "paring"], "not_adj": ["carbon steel"]}),
            ("It is forged from high-carbon German stainless steel, tough enough to shrug off the odd chicken bone.", {"only": ["chef", "bread", "paring"], "not_adj": ["carbon steel"]}),
            ("The core is white carbon steel that sharpens easily but should be dried after each use to prevent rust.", {"only": ["chef", "santoku"], "not_adj": ["forged", "Damascus"]}),
            ("The edge is ground to 15 degrees per side for effortless slicing.", {"only": ["chef", "santoku", "paring"]}),
            ("The handle is stabilized wood with a brass pin, sealed against water.", {"only": ["chef", "paring", "bread"]}),
            ("A textured polymer handle stays secure even with wet or oily hands.", {"only": ["chef", "paring", "bread"]}),
            ("The octagonal Japanese-style handle is light, so the balance sits just in front of the heel.", {"only": ["santoku"]}),
        ],
        "color_sentences": [
            ("The handle is finished in {color} with {accent} rivets.", {"only": ["chef", "paring", "bread"]}),
            ("It has a {color} handle held by {accent} pins.", {"only": ["chef", "paring", "bread"]}),
            ("The octagonal handle is {color}, with no rivets to trap food.", {"only": ["santoku"]}),
            "This version pairs the blade with a {color} handle.",
        ],
    },
    {
        "slug": "coffee-makers",
        "label": "coffee makers",
        "brands": ["Brewhaus", "Ember & Oak", "Morrow Kitchen", "Caffa", "Steamline"],
        "models": [
            "Bloom", "Barista One", "Slowdrip", "Duet", "Crema Pro", "Pourline", "Alto",
            "Daybreak", "Ristretto", "Golden Cup", "Nova", "Brewline", "Origin",
        ],
        "colors": ["black", "white", "red", "cream", "silver", "sage green", "navy", "charcoal", "mustard"],
        "accents": ["wood", "chrome", "black"],
        "subtypes": [
            {
                "key": "drip", "noun": "drip coffee maker", "price": (60, 220), "shape": "drip",
                "adjs": [
                    ("programmable", "a programmable timer so coffee is ready when you wake"),
                    ("10-cup", "a 10-cup glass carafe on a warming plate"),
                    ("thermal", "a double-walled thermal carafe that keeps coffee hot without a hot plate"),
                ],
                "uses": [
                    "households that brew a full pot", "busy office kitchens",
                    "slow weekend breakfasts",
                ],
                "features": [
                    "a wide shower head that wets the grounds evenly",
                    "a pause-and-serve function",
                    "a bloom cycle that pre-wets the coffee",
                    "a water window with clear cup markings",
                ],
                "tags": ["coffee", "kitchen", "drip"],
            },
            {
                "key": "espresso", "noun": "espresso machine", "price": (240, 900), "shape": "espresso",
                "adjs": [
                    ("semi-automatic", "a semi-automatic brew group with a 58 mm portafilter"),
                    ("dual-boiler", "two boilers for pulling a shot and steaming milk at once"),
                    ("compact", "a footprint narrow enough for a small counter"),
                ],
                "uses": [
                    "milk drinks like flat whites and cappuccinos",
                    "home baristas learning to dial in shots",
                ],
                "features": [
                    "a steam wand that textures milk for latte art",
                    "a pressure gauge on the front panel",
                    "PID temperature control",
                    "a cup warmer on top",
                    "a hot water spout for americanos",
                ],
                "tags": ["coffee", "kitchen", "espresso"],
            },
            {
                "key": "pour-over", "noun": "pour-over coffee maker", "price": (25, 80), "shape": "pourover",
                "adjs": [
                    ("ceramic", "a ceramic cone that holds heat during the brew"),
                    ("glass", "a borosilicate glass carafe with a wooden collar"),
                    ("stainless", "a reusable stainless mesh filter that skips paper"),
                ],
                "uses": [
                    "one or two careful cups", "light-roast single-origin beans",
                    "a slow morning ritual",
                ],
                "features": [
                    "ribbed inner walls that let air escape",
                    "a single large drain hole for controlling flow",
                    "a cup-level window",
                    "a matching lid that keeps the carafe warm",
                ],
                "tags": ["coffee", "kitchen", "manual-brewing"],
            },
            {
                "key": "french-press", "noun": "French press", "price": (25, 90), "shape": "press",
                "adjs": [
                    ("insulated", "double-wall stainless steel that keeps coffee hot for an hour"),
                    ("8-cup", "an 8-cup (1 liter) capacity"),
                ],
                "uses": ["full-bodied coffee", "cold brew overnight", "cabins and campsites"],
                "features": [
                    "a four-layer mesh filter that keeps sludge out of the cup",
                    "a lid that turns to block the spout",
                    "a comfortable loop handle",
                ],
                "tags": ["coffee", "kitchen", "manual-brewing", "camping"],
            },
        ],
        "materials": [
            ("The body is brushed stainless steel with a BPA-free water tank that lifts out for filling.", {"only": ["drip", "espresso"]}),
            ("Water is heated to 92-96 degrees C, the range most coffee professionals recommend.", {"only": ["drip", "espresso"]}),
            ("The housing is powder-coated aluminum that wipes clean easily.", {"only": ["drip", "espresso"]}),
            ("A removable drip tray and dishwasher-safe parts make cleanup quick.", {"only": ["espresso"]}),
            ("A descaling reminder light tells you when limescale needs attention.", {"only": ["drip", "espresso"]}),
            ("The carafe is borosilicate glass that survives sudden temperature changes.", {"only": ["drip", "pour-over", "french-press"], "not_adj": ["thermal", "insulated"]}),
            ("Every part that touches coffee comes apart for rinsing and goes in the dishwasher.", {"only": ["pour-over", "french-press"]}),
        ],
        "color_sentences": [
            "The {color} finish with {accent} details looks good on an open shelf.",
            "It comes in {color} with {accent} trim.",
            "This one is {color}, with a {accent} handle.",
        ],
    },
    {
        "slug": "headphones",
        "label": "headphones",
        "brands": ["Auralis", "Quietline", "Volta Audio", "Hearth Sound", "Kinetra"],
        "models": [
            "Pulse", "Studio Q", "Airwave", "Echo", "Halo", "Drift", "Focus", "Cadence",
            "Loop", "Tempo", "Mono", "Arc", "Vista",
        ],
        "colors": ["black", "white", "navy", "sand", "sage green", "pink", "red", "silver", "charcoal"],
        "accents": ["silver", "black", "gold", "gray"],
        "subtypes": [
            {
                "key": "over-ear", "noun": "noise-cancelling over-ear headphones", "price": (150, 380), "shape": "over-ear",
                "adjs": [
                    ("wireless", "Bluetooth multipoint pairing to a laptop and a phone at once"),
                    ("hybrid", "hybrid active noise cancellation driven by six microphones"),
                ],
                "uses": ["open-plan offices", "long-haul flights", "deep focus work"],
                "features": [
                    "up to 40 hours of battery life",
                    "memory-foam ear cushions",
                    "a transparency mode for quick conversations",
                    "a fold-flat design with a hard case",
                ],
                "tags": ["audio", "noise-cancelling", "office", "travel"],
            },
            {
                "key": "earbuds", "noun": "true wireless earbuds", "price": (60, 240), "shape": "earbuds",
                "adjs": [
                    ("sweat-resistant", "an IPX5 sweat and splash rating"),
                    ("compact", "small buds that sit almost flush with the ear"),
                    ("sport", "soft wing tips that keep them in place on runs"),
                ],
                "uses": ["running and gym workouts", "commuting", "calls on the go"],
                "features": [
                    "a charging case with wireless charging",
                    "touch controls on each bud",
                    "an ambient mode for hearing traffic",
                    "four sizes of silicone tips",
                ],
                "tags": ["audio", "running", "fitness", "wireless"],
            },
            {
                "key": "studio", "noun": "studio headphones", "price": (90, 320), "shape": "studio",
                "adjs": [
                    ("closed-back", "a closed-back design that isolates sound"),
                    ("open-back", "an open-back design with a wide, natural soundstage"),
                    ("wired", "a detachable cable with no battery to run flat"),
                ],
                "uses": ["mixing and editing audio", "podcast recording", "critical listening at home"],
                "features": [
                    "a coiled cable with a screw-on adapter",
                    "replaceable velour ear pads",
                    "40 mm dynamic drivers",
                    "a spring-steel headband",
                ],
                "tags": ["audio", "studio", "wired"],
            },
            {
                "key": "headset", "noun": "office headset", "price": (60, 200), "shape": "headset",
                "adjs": [
                    ("USB-C", "a USB-C dongle that works without drivers"),
                    ("boom-mic", "a flip-to-mute boom microphone with noise suppression"),
                ],
                "uses": ["video calls", "long days of customer calls", "remote work"],
                "features": [
                    "on-ear controls for mute and volume",
                    "a lightweight padded headband",
                    "a busy light that tells others you are on a call",
                    "leatherette ear cushions",
                ],
                "tags": ["audio", "office", "calls", "remote-work"],
            },
        ],
        "materials": [
            ("The headband is wrapped in soft protein leather over a light aluminum frame.", {"only": ["over-ear", "studio", "headset"]}),
            "Bio-cellulose drivers deliver a warm, detailed sound with tight bass.",
            ("Slow-recovery memory foam seals around the ears without pressing on glasses.", {"only": ["over-ear", "studio", "headset"]}),
            ("The companion app offers a five-band equalizer and a hearing-safe volume limit.", {"only": ["over-ear", "earbuds"]}),
            ("USB-C fast charging gives about five hours of playback from ten minutes on the cable.", {"only": ["over-ear", "earbuds"]}),
            "The outer shells are 60% recycled plastic with a soft-touch finish.",
            ("Each bud weighs about 5 grams, light enough to forget during a long run.", {"only": ["earbuds"]}),
        ],
        "color_sentences": [
            "It is finished in {color} with {accent} details.",
            "This pair is {color}, with a small {accent} logo.",
            "The {color} colorway has small {accent} accents.",
        ],
    },
    {
        "slug": "desk-lamps",
        "label": "desk lamps",
        "brands": ["Lumen & Co.", "Brightwell", "Arcline", "Halden", "Nordlys"],
        "models": [
            "Arc", "Beacon", "Pivot", "Task One", "Lumina", "Heron", "Crane", "Focus", "Ember",
            "Atlas", "Nova", "Clarity", "Studio",
        ],
        "colors": ["black", "white", "brass", "mustard", "sage green", "terracotta", "navy", "red", "charcoal"],
        "accents": ["brass", "black", "white", "chrome"],
        "subtypes": [
            {
                "key": "architect", "noun": "architect desk lamp", "price": (60, 220), "shape": "architect",
                "adjs": [
                    ("swing-arm", "a spring-balanced swing arm that stays where you put it"),
                    ("clamp-mount", "a desk clamp that frees up the work surface"),
                ],
                "uses": ["drawing and drafting", "hobby work like painting miniatures", "a home office desk"],
                "features": [
                    "a metal shade with a heat-resistant lining",
                    "a head that rotates through 360 degrees",
                    "a shade-mounted switch",
                    "a cloth-covered cable",
                ],
                "tags": ["lighting", "home-office", "drawing"],
            },
            {
                "key": "led-task", "noun": "LED task lamp", "price": (45, 180), "shape": "led",
                "adjs": [
                    ("dimmable", "stepless touch dimming from 5 to 100 percent"),
                    ("color-tunable", "adjustable color temperature from warm 2700 K to cool 6500 K"),
                ],
                "uses": [
                    "reading and paperwork", "late-night study sessions",
                    "video calls that need even light on the face",
                ],
                "features": [
                    "a high CRI of 95 so colors look true",
                    "a USB-C charging port in the base",
                    "an auto-off timer",
                    "a flicker-free driver",
                ],
                "tags": ["lighting", "home-office", "led", "study"],
            },
            {
                "key": "table", "noun": "mushroom table lamp", "price": (50, 190), "shape": "mushroom",
                "adjs": [
                    ("ceramic", "a glazed ceramic body"),
                    ("portable", "a rechargeable battery that lasts about 8 hours"),
                ],
                "uses": ["bedside reading", "warm evening light in a living room", "a cozy corner of a home office"],
                "features": [
                    "a rounded shade that gives soft, diffused light",
                    "an inline dimmer switch",
                    "a braided fabric cord",
                    "three warm brightness levels",
                ],
                "tags": ["lighting", "living-room", "ambient"],
            },
            {
                "key": "clip-on", "noun": "clip-on reading lamp", "price": (20, 70), "shape": "clip",
                "adjs": [
                    ("rechargeable", "a built-in battery that lasts about 8 hours on medium"),
                    ("flexible", "a flexible gooseneck that bends in any direction"),
                ],
                "uses": ["reading in bed", "music stands", "a small bookshelf"],
                "features": [
                    "a padded clamp that will not mark furniture",
                    "three color temperatures",
                    "a memory function that restores your last setting",
                ],
                "tags": ["lighting", "reading", "portable"],
            },
        ],
        "materials": [
            ("The arm is powder-coated steel with internal springs, so there are no exposed cables.", {"only": ["architect"]}),
            ("A weighted cast-iron base keeps it steady even at full reach.", {"only": ["architect", "led-task"]}),
            ("The LED module is rated for 50,000 hours and runs cool to the touch.", {"only": ["led-task", "clip-on", "table"]}),
            ("A frosted diffuser spreads the light evenly and removes glare from glossy paper.", {"only": ["led-task", "table"]}),
            ("The shade is spun aluminum with a matte interior that cuts reflections.", {"only": ["architect"]}),
            ("It takes a standard E26 bulb, so you can choose your own warmth and brightness.", {"only": ["architect", "table"], "not_adj": ["portable"]}),
            ("The gooseneck is wrapped in soft silicone, so it bends quietly and holds its position.", {"only": ["clip-on"]}),
        ],
        "color_sentences": [
            "The lamp is finished in {color} with {accent} hardware.",
            "This one is {color}, with a {accent} switch.",
            "It comes in {color} with {accent} joints.",
        ],
    },
    {
        "slug": "yoga-mats",
        "label": "yoga mats",
        "brands": ["Stillpoint", "Groundwork", "Asana Supply", "Kinetra", "Terra Flow"],
        "models": [
            "Balance", "Flow", "Anchor", "Grounded", "Sunrise", "Pure Grip", "Stillwater", "Solstice",
            "Restore", "Vinyasa", "Harmony", "Align", "Tidal",
        ],
        "colors": [
            "purple", "teal", "pink", "lavender", "sage green", "charcoal", "coral", "sky blue",
            "navy", "forest green", "black",
        ],
        "accents": ["gray", "black", "white", "sand"],
        "subtypes": [
            {
                "key": "standard", "noun": "yoga mat", "price": (35, 110),
                "adjs": [
                    ("non-slip", "a grippy open-cell surface that holds even in sweaty classes"),
                    ("everyday", "4 mm of cushioning for a balance of stability and comfort"),
                ],
                "uses": ["daily vinyasa practice", "studio classes", "home workouts"],
                "features": [
                    "alignment lines etched into the surface",
                    "a cotton carrying strap",
                    "a slightly longer 185 cm length",
                ],
                "tags": ["fitness", "yoga"],
            },
            {
                "key": "thick", "noun": "exercise mat", "price": (30, 90),
                "adjs": [
                    ("extra-thick", "a 6 mm foam core that cushions knees and wrists"),
                    ("cushioned", "a dense, springy foam that does not bottom out"),
                ],
                "uses": ["restorative and yin yoga", "pilates and floor exercises", "hard wooden floors"],
                "features": [
                    "a ridged underside that grips the floor",
                    "a wipe-clean surface",
                    "a Velcro strap to keep it rolled",
                ],
                "tags": ["fitness", "yoga", "pilates", "recovery"],
            },
            {
                "key": "travel", "noun": "travel yoga mat", "price": (30, 80),
                "adjs": [
                    ("foldable", "a 1.5 mm build that folds into a suitcase"),
                    ("lightweight", "a weight of under 1 kg"),
                ],
                "uses": ["practice while traveling", "hotel rooms", "layering over studio mats"],
                "features": [
                    "a machine-washable top layer",
                    "a slim carry bag",
                    "a suede-like surface that grips better as you sweat",
                ],
                "tags": ["fitness", "yoga", "travel"],
            },
            {
                "key": "cork", "noun": "cork yoga mat", "price": (60, 130),
                "colors": ["tan", "sand", "brown"],
                "adjs": [
                    ("natural", "a natural cork surface that gets grippier as it gets wet"),
                    ("antimicrobial", "naturally antimicrobial cork that resists odor"),
                ],
                "uses": ["hot yoga", "sweaty power classes", "eco-minded practice"],
                "features": [
                    "a natural rubber backing",
                    "a printed alignment mandala",
                    "a surface that needs only a quick wipe",
                ],
                "tags": ["fitness", "yoga", "hot-yoga", "eco"],
            },
        ],
        "materials": [
            ("It is made from natural tree rubber with no PVC, so it is heavier but very stable.", {"only": ["standard"]}),
            ("The polyurethane top layer feels slightly tacky and wipes clean easily.", {"only": ["standard"]}),
            ("Closed-cell TPE foam resists sweat and is much lighter than rubber.", {"only": ["thick", "travel"]}),
            "A textured base stops the mat creeping on smooth floors.",
            ("At 183 by 61 cm it suits most people, and a long version adds 15 cm for taller practitioners.", {"only": ["standard", "thick", "cork"]}),
            ("Expect a faint rubber smell for the first week; airing it unrolled helps.", {"only": ["standard", "cork"]}),
            ("The cork comes from bark that regrows after harvest and is bonded to a thin rubber base.", {"only": ["cork"]}),
        ],
        "color_sentences": [
            "The mat is {color} and rolls up with a {accent} carrying strap.",
            "This one is {color}, with a {accent} strap to keep it rolled.",
            "It comes in {color} with a {accent} strap.",
        ],
    },
]

# Complementary categories: after a purchase, users often go on to these (events generator).
COMPLEMENTS: dict[str, list[str]] = {
    "running-shoes": ["running-socks", "backpacks"],
    "running-socks": ["running-shoes"],
    "rain-jackets": ["backpacks", "running-shoes"],
    "backpacks": ["rain-jackets"],
    "kitchen-knives": ["coffee-makers"],
    "coffee-makers": ["kitchen-knives"],
    "headphones": ["desk-lamps"],
    "desk-lamps": ["headphones"],
    "yoga-mats": ["running-socks"],
}
# Tastes: which categories a user with a given main interest tends to also like.
AFFINITY: dict[str, list[str]] = {
    "running-shoes": ["running-socks", "backpacks", "rain-jackets", "headphones", "yoga-mats"],
    "running-socks": ["running-shoes", "yoga-mats"],
    "rain-jackets": ["backpacks", "running-shoes"],
    "backpacks": ["rain-jackets", "running-shoes"],
    "kitchen-knives": ["coffee-makers"],
    "coffee-makers": ["kitchen-knives", "desk-lamps"],
    "headphones": ["desk-lamps", "running-shoes"],
    "desk-lamps": ["headphones", "coffee-makers"],
    "yoga-mats": ["running-shoes", "running-socks", "headphones"],
}

# Articles: per product category, themes -> (article category, sentence pool, titles).
# A title is (title, lead sentence, extra related product categories, pool sentences it always uses).
ARTICLES: dict[str, dict[str, dict]] = {
    "running-shoes": {
        "choose": {
            "category": "buying-guides",
            "pool": [
                "Start with the surface you run on most: road shoes have flatter, smoother outsoles, while trail shoes add deep lugs and a tougher upper.",
                "Fit matters more than any technology, so leave about a thumb's width between your longest toe and the end of the shoe.",
                "Try shoes on in the afternoon, when feet are slightly swollen, and wear the socks you actually run in.",
                "Cushioning is a matter of taste: a softer stack protects the legs on long runs, while a firmer, lower shoe gives more feel for the ground.",
                "Heel-to-toe drop changes how a shoe rolls, so if you move from a 10 mm to a 4 mm drop, build up gradually to spare your calves.",
                "If your feet roll inward noticeably, a stability shoe with a firmer inner side can make long runs more comfortable.",
                "Most running shoes last 500 to 800 km, so note the date you start using a pair.",
            ],
            "titles": [
                ("How to choose trail running shoes", "Trail running shoes differ from road shoes in grip, protection and fit, and picking the right pair starts with knowing your terrain.", ["running-socks"], [0]),
                ("Road or trail? Picking your next running shoe", "Many runners own one pair of shoes for everything, but road and trail shoes are built for very different jobs.", [], [0]),
                ("A fit checklist for new running shoes", "A running shoe that fits well disappears on your foot; one that doesn't announces itself by the third kilometer.", ["running-socks"], [1, 2]),
            ],
        },
        "care": {
            "category": "care-tips",
            "pool": [
                "Knock off dried mud after every trail run and rinse the outsole with lukewarm water and a soft brush.",
                "Never put running shoes in the tumble dryer or on a radiator, because heat weakens the glue and shrinks the upper.",
                "Stuff wet shoes with newspaper and let them dry at room temperature, changing the paper after an hour or two.",
                "Pull the insoles out after each run so the shoe and the insole can both air out.",
                "Rotating two pairs gives the midsole foam a day to recover its bounce between runs.",
                "When the outsole is worn smooth under the forefoot or the midsole shows deep creases, it is time to retire the pair.",
                "A sprinkle of baking soda overnight deals with most odors; wash the insoles by hand if the smell persists.",
            ],
            "titles": [
                ("How to clean muddy trail shoes", "Trail shoes come home caked in mud, and a few minutes of care after each run can add months to their life.", [], [0, 2]),
                ("Making your running shoes last longer", "A good pair of running shoes isn't cheap, so it pays to know what actually wears them out.", [], [4]),
                ("When to replace your running shoes", "Running shoes rarely fall apart before they stop protecting you, which makes the replacement date easy to miss.", [], [5]),
            ],
        },
        "use": {
            "category": "fitness",
            "pool": [
                "Increase your weekly distance by no more than about ten percent, and make every fourth week an easier one.",
                "Most of your running should feel conversational, with one or two harder sessions a week.",
                "On trails, shorten your stride on climbs and use your arms for balance on steep descents.",
                "Merino or synthetic socks prevent far more blisters than cotton, which holds sweat against the skin.",
                "A light running vest lets you carry water, a rain shell and a snack on runs longer than 90 minutes.",
                "Strength work for calves, hips and glutes twice a week reduces the most common running injuries.",
                "Warm up with five minutes of easy jogging and a few strides before any fast session.",
            ],
            "titles": [
                ("Your first trail half marathon: a training outline", "Training for a trail half marathon is less about speed and more about climbing, descending and time on your feet.", ["backpacks", "running-socks"], [2]),
                ("Running through the autumn: gear and habits", "Shorter days and wet trails make autumn running harder, but also some of the most rewarding miles of the year.", ["rain-jackets"], []),
                ("Building mileage without getting hurt", "Most running injuries come from doing too much too soon rather than from bad luck.", [], [0]),
            ],
        },
    },
    "running-socks": {
        "choose": {
            "category": "buying-guides",
            "pool": [
                "Merino wool blends regulate temperature and resist odor, while synthetic socks dry faster and usually last longer.",
                "Cushioned socks soften hard landings, but thin socks give a closer fit in snug racing shoes.",
                "Crew-height socks keep grit and seeds out of trail shoes; no-show socks suit road running in warm weather.",
                "Look for flat toe seams, since a raised seam is one of the most common causes of rubbing on long runs.",
                "Left- and right-specific socks follow the shape of the foot and reduce bunching around the arch.",
                "Buy socks and shoes together, because a thick sock can take up half a shoe size.",
                "Cotton is the one material to avoid: it holds sweat against the skin and causes blisters.",
                "Compression socks may ease soreness after hard efforts, but they are no substitute for a good fit and gradual training.",
            ],
            "titles": [
                ("Merino or synthetic? Choosing running socks", "Running socks are the cheapest part of your kit, yet they decide whether your feet finish a long run happy.", ["running-shoes"], [0]),
                ("How to stop blisters with the right socks", "Almost every blister starts with friction and moisture, and socks control both.", [], [3, 6]),
                ("Do compression socks help runners?", "Compression socks have become common at races, though the evidence for them is more modest than the marketing.", [], [7]),
            ],
        },
        "care": {
            "category": "care-tips",
            "pool": [
                "Turn socks inside out before washing so sweat and skin cells rinse out of the terry loops.",
                "Wash merino socks at 30 degrees on a wool cycle and skip fabric softener, which coats the fibers and reduces wicking.",
                "Air-drying keeps the elastic in the cuff from breaking down as quickly as it does in a hot dryer.",
                "Retire socks when the heel becomes thin enough to see through, because that is where blisters start.",
                "Clipping pairs together before they go in the wash saves a surprising amount of matching time.",
                "Merino needs fewer washes than synthetics; airing it overnight is often enough after a short run.",
            ],
            "titles": [
                ("Washing merino running socks", "Merino socks cost more than synthetic ones, and a gentle wash routine keeps them soft for years.", [], [1]),
                ("Why your running socks wear out at the heel", "Holes rarely appear at random: they show where your shoe rubs and what to change.", ["running-shoes"], [3]),
                ("A simple sock routine for runners", "Runners go through socks quickly, so a simple routine for washing and rotating them pays off.", [], [4]),
            ],
        },
        "use": {
            "category": "fitness",
            "pool": [
                "On long runs, a thin layer of anti-chafe balm on the toes and heels adds another line of defense.",
                "Carry a spare pair of socks in your vest pack for ultra-distance races and change at a midway aid station.",
                "Wet feet are soft feet, so after stream crossings change into dry socks as soon as you can.",
                "A hot spot is a warning: stopping to fix a wrinkle or a pebble takes a minute, while a blister can end a race.",
                "Taping known trouble spots before a race works better than taping after a blister forms.",
                "Lacing your shoes with a heel lock reduces the slipping that causes heel blisters.",
            ],
            "titles": [
                ("Foot care for ultra runners", "In a long ultra, your feet matter as much as your legs and your stomach.", ["running-shoes", "backpacks"], [1]),
                ("Running in the rain without soggy feet", "Wet weather is hard on feet, but a few habits stop a rainy run from ending in blisters.", ["rain-jackets", "running-shoes"], [2]),
                ("Race-day kit checklist: from socks to shoes", "The night before a race is the wrong time to try new kit, and socks are no exception.", ["running-shoes"], [4]),
            ],
        },
    },
    "rain-jackets": {
        "choose": {
            "category": "buying-guides",
            "pool": [
                "Waterproof ratings above about 10,000 mm hold up in sustained rain, and breathability above 10,000 g/m2 helps when you are working hard.",
                "Three-layer fabrics are the most durable, while 2.5-layer jackets are lighter and pack smaller.",
                "A good hood moves with your head and has a stiffened peak so rain does not run onto your face.",
                "Pit zips and mesh-lined pockets let you vent heat without taking the jacket off.",
                "Try the jacket over the layers you wear in winter and lift your arms to check that the hem stays put.",
                "For hiking with a pack, choose pockets placed high enough to stay clear of the hip belt.",
                "Bright colors are easier to spot in poor visibility, which matters in the mountains.",
            ],
            "titles": [
                ("How to choose a waterproof rain jacket", "Rain jackets range from featherweight shells to armored mountain jackets, and the right one depends on how you use it.", [], [2]),
                ("Hardshell or packable? A rain jacket buyer's guide", "A hardshell that survives a winter ridge and a shell that fits in a pocket are very different tools.", ["backpacks"], [1]),
                ("What the waterproof ratings on jackets really mean", "Labels quote millimeters and grams, but few shoppers are told what those numbers mean in the rain.", [], [0]),
            ],
        },
        "care": {
            "category": "care-tips",
            "pool": [
                "Wash waterproof jackets with a technical cleaner rather than regular detergent, which leaves residues that attract water.",
                "Close all zips and Velcro tabs before washing so nothing snags the face fabric.",
                "A short tumble on low heat, or a warm iron through a towel, reactivates the water-repellent finish.",
                "If water stops beading on the surface, reproof the jacket with a wash-in or spray-on treatment.",
                "Dirt and sunscreen clog the membrane, which is why an unwashed jacket feels clammy inside.",
                "Store the jacket hanging loosely rather than compressed in its stuff sack.",
                "Small tears can be fixed with a self-adhesive repair patch, rounded at the corners so it does not peel.",
            ],
            "titles": [
                ("Reproofing a rain jacket in five steps", "When rain soaks into the outer fabric instead of beading off, your jacket needs reproofing, not replacing.", [], [2, 3]),
                ("Why your waterproof jacket feels wet inside", "A jacket that feels wet inside is not always leaking; often it is condensation or a worn finish.", [], [4]),
                ("Washing technical outerwear without ruining it", "Many people never wash their rain jacket for fear of damaging it, which does more harm than a careful wash.", [], [0, 1]),
            ],
        },
        "use": {
            "category": "outdoor",
            "pool": [
                "Check the mountain forecast, not the valley one, since wind and rain can be very different a thousand meters up.",
                "Layering works best in three parts: a wicking base, an insulating mid layer and a waterproof shell.",
                "Put the shell on before you get wet, because drying out on the move is nearly impossible in cold rain.",
                "A pack liner or dry bags keep spare clothes dry even when the pack itself soaks through.",
                "Wet weather makes rocks and roots slippery, so shoes with sticky rubber and deep lugs are worth the weight.",
                "Keep a warm hat and gloves in the top pocket, because wet hands lose dexterity fast.",
                "Plan a shorter route with escape options when heavy rain is forecast.",
            ],
            "titles": [
                ("Hiking in the rain: how to stay dry and warm", "Rain doesn't have to cancel a hike, as long as you prepare for it.", ["backpacks"], [2]),
                ("Layering for changeable mountain weather", "Mountain weather can swing from sunshine to sleet within an hour, and layers are how you keep up.", ["backpacks"], [1]),
                ("Packing list for a rainy trail race", "Race organizers often require a waterproof jacket, and on a wet day it becomes the most important item in your pack.", ["running-shoes", "backpacks", "running-socks"], [3, 4]),
            ],
        },
    },
    "backpacks": {
        "choose": {
            "category": "buying-guides",
            "pool": [
                "For day hikes, 20 to 30 liters fits water, food, a rain jacket and a warm layer.",
                "Measure your torso from the bony bump at the base of your neck to the top of your hip bones, and pick the matching pack size.",
                "A hip belt should carry most of the weight, which is why it belongs on your hip bones rather than your waist.",
                "Commuters should look for a padded laptop sleeve that sits above the bottom of the pack.",
                "Roll-top closures are the most weatherproof, while zippered panels make it easier to reach your gear.",
                "Load the pack with some weight in the shop and walk around for ten minutes before deciding.",
                "A ventilated back panel makes a big difference on hot climbs and sweaty commutes.",
            ],
            "titles": [
                ("How to choose a hiking daypack", "A good daypack carries what you need for a day outdoors without you noticing it.", ["rain-jackets"], [0]),
                ("The right backpack size for your trip", "Pack volume is quoted in liters, and it is easy to buy far too much or too little.", [], [0, 1]),
                ("What to look for in a commuter backpack", "A commuter bag gets used more than any other piece of gear, so small details matter.", ["headphones"], [3]),
            ],
        },
        "care": {
            "category": "care-tips",
            "pool": [
                "Empty every pocket and shake out crumbs and sand before cleaning.",
                "Hand-wash the pack in lukewarm water with a mild soap, because washing machines can damage coatings and foam.",
                "Scrub zipper teeth with an old toothbrush and run a little zip lubricant along them.",
                "Hang the pack upside down to dry in the shade, with all the pockets open.",
                "Check the stitching at the shoulder straps and haul loop, where heavy loads pull hardest.",
                "Store packs loosely in a dry place rather than compressed, so the foam keeps its shape.",
            ],
            "titles": [
                ("How to clean a backpack without damaging it", "Backpacks collect sweat, sunscreen and spilled snacks, and a yearly clean keeps them fresh and working.", [], [1]),
                ("Fixing a stuck backpack zipper", "A stuck zip usually means grit in the teeth or a worn slider, both of which you can fix at home.", [], [2]),
                ("Storing your pack between trips", "Where and how you store a pack in the off season affects how long it lasts.", [], [5]),
            ],
        },
        "use": {
            "category": "outdoor",
            "pool": [
                "Put heavy items close to your back and between your shoulder blades to keep the load stable.",
                "Keep rain gear, snacks and a map in the outside pockets, where you can reach them without unpacking.",
                "Tighten the hip belt first, then the shoulder straps, then the load lifters.",
                "A hydration bladder encourages you to drink small amounts often.",
                "On a trail run, a snug running vest bounces far less than a daypack.",
                "Line the main compartment with a dry bag or a heavy bin bag when rain is likely.",
                "A small first-aid kit, a headlamp and an emergency blanket should live in your pack all year.",
            ],
            "titles": [
                ("How to pack a backpack for a day hike", "How you pack a bag affects how comfortable it is on the trail, often more than the bag itself.", ["rain-jackets"], [0]),
                ("Running vests vs. daypacks for long trail runs", "Once runs pass two hours you need to carry water and kit, and the choice of pack matters.", ["running-shoes"], [4]),
                ("Ten essentials every hiking pack should carry", "Experienced hikers carry a small kit of essentials on every trip, even on short and familiar routes.", ["rain-jackets"], [6]),
            ],
        },
    },
    "kitchen-knives": {
        "choose": {
            "category": "buying-guides",
            "pool": [
                "A chef's knife, a paring knife and a serrated bread knife cover almost every task in a home kitchen.",
                "Western chef's knives have a curved belly for rocking cuts, while Japanese santoku blades are thinner and favor push cuts.",
                "Stainless steel is easy to look after, while carbon steel takes a sharper edge but rusts if left wet.",
                "Hold the knife before buying: the handle should fill your hand without forcing your grip.",
                "A full tang and a balance point near the bolster make a knife feel controlled.",
                "Harder steels above 60 HRC hold an edge longer but chip more easily on bones and frozen food.",
                "Skip large block sets, since two or three good knives beat a dozen mediocre ones.",
            ],
            "titles": [
                ("Choosing your first chef's knife", "The chef's knife does most of the work in a kitchen, so it is the one to spend money on.", [], [3]),
                ("Santoku vs. chef's knife: which should you buy?", "The santoku and the chef's knife overlap heavily, but each suits a different cutting style.", [], [1]),
                ("Stainless or carbon steel? A knife buyer's guide", "The steel a knife is made from decides how sharp it gets and how much care it needs.", [], [2]),
            ],
        },
        "care": {
            "category": "care-tips",
            "pool": [
                "Wash knives by hand and dry them straight away, because dishwashers dull edges and crack wooden handles.",
                "Carbon steel develops a gray-blue patina over time that protects the blade, so wipe it dry after cutting acidic food.",
                "If orange rust spots appear on carbon steel, remove them with a wine cork and a little baking soda paste.",
                "Hone the edge on a ceramic rod every few uses and sharpen it on a whetstone a few times a year.",
                "Use a wooden or plastic board; glass, stone and ceramic boards ruin edges in minutes.",
                "Store knives on a magnetic strip or in blade guards, never loose in a drawer.",
                "A drop of food-safe mineral oil on the blade keeps carbon steel from rusting in storage.",
            ],
            "titles": [
                ("Caring for a carbon steel knife", "Carbon steel knives are prized for their sharpness, and they reward a little daily care.", [], [1, 2]),
                ("How to sharpen a kitchen knife on a whetstone", "Sharpening on a whetstone looks intimidating, but the basic motion takes an afternoon to learn.", [], [3]),
                ("Honing vs. sharpening: keeping knives keen", "Honing and sharpening are often confused, yet they do different jobs for a blade.", [], [3]),
            ],
        },
        "use": {
            "category": "cooking",
            "pool": [
                "Curl the fingertips of your guiding hand under so the flat of the blade rests against your knuckles.",
                "Let the knife do the work, because a sharp blade needs very little downward force.",
                "A damp towel under the cutting board stops it from sliding on the counter.",
                "Cut round vegetables in half first so they sit flat and stable on the board.",
                "When dicing onions, leave the root end on so the layers hold together.",
                "Use the spine, not the edge, to scrape chopped food across the board.",
                "Slice bread with long, gentle strokes and let the serrations do the cutting.",
            ],
            "titles": [
                ("Basic knife skills every home cook should learn", "A handful of cutting techniques makes everyday cooking faster and safer.", [], [0]),
                ("How to dice an onion quickly and safely", "Dicing an onion is the first knife skill most cooks learn, and the one they use most.", [], [4]),
                ("Slicing bread, tomatoes and other tricky foods", "Soft insides under firm skins trip up dull knives, which is where technique helps.", [], [6]),
            ],
        },
    },
    "coffee-makers": {
        "choose": {
            "category": "buying-guides",
            "pool": [
                "Drip machines are the easiest way to make several cups at once, while pour-over gives more control over a single cup.",
                "Look for a drip machine that heats water to between 92 and 96 degrees, because cheaper machines often brew too cool.",
                "A thermal carafe keeps coffee hot without the burnt taste a warming plate creates.",
                "Espresso needs a capable grinder as much as a good machine, so budget for both.",
                "A French press is cheap, durable and makes a full-bodied cup, though with some sediment.",
                "Think about cleaning: removable parts and a wide tank opening save time every day.",
                "Fresh beans matter more than the brewer, so buy whole beans roasted within the last month.",
            ],
            "titles": [
                ("How to choose a coffee maker", "The best coffee maker is the one that fits the way you drink coffee, from a single cup to a full pot.", [], [0]),
                ("Drip, pour-over or French press?", "Three simple brewing methods cover most of what people drink at home, each with its own character.", [], [0, 4]),
                ("Is a home espresso machine worth it?", "A home espresso setup can pay for itself, but only if you enjoy the process.", [], [3]),
            ],
        },
        "care": {
            "category": "care-tips",
            "pool": [
                "Descale your machine every one to three months, depending on how hard your water is.",
                "A solution of citric acid works as well as branded descalers and costs less.",
                "Rinse the carafe and filter basket daily, because old coffee oils turn rancid and make the next brew bitter.",
                "Run two or three tanks of clean water after descaling to flush out any sour taste.",
                "Backflush an espresso machine with a blind basket once a week if you use it daily.",
                "Replace the group head gasket when shots start to leak around the portafilter.",
                "Leave the water tank lid open after use so the tank can dry and does not grow mold.",
            ],
            "titles": [
                ("How to descale a coffee maker", "Limescale slowly chokes a coffee machine, lowering the brewing temperature and slowing the flow.", [], [0, 1]),
                ("Cleaning your espresso machine: a weekly routine", "Espresso machines need more regular cleaning than other brewers, but it only takes a few minutes.", [], [4]),
                ("Why your coffee tastes bitter", "A bitter cup is usually a sign of old coffee oils, overheated coffee or a dirty machine, not bad beans.", [], [2]),
            ],
        },
        "use": {
            "category": "cooking",
            "pool": [
                "Start with about 60 grams of coffee per liter of water and adjust to taste.",
                "Grind size matters: fine for espresso, medium for drip and pour-over, coarse for French press.",
                "Let freshly boiled water rest for about thirty seconds before pouring it over the grounds.",
                "Pour a little water first and wait thirty seconds so the coffee can bloom and release gas.",
                "Weigh coffee and water on a kitchen scale, because scoops vary more than you would think.",
                "Store beans in an airtight container away from light, and not in the fridge.",
                "Cold brew needs a coarse grind and twelve to eighteen hours of steeping in the fridge.",
            ],
            "titles": [
                ("Brewing better pour-over coffee at home", "Pour-over brewing rewards a few simple habits with a clean, bright cup.", [], [3]),
                ("Making cold brew with a French press", "Cold brew is smooth and low in acidity, and a French press makes it easy.", [], [6]),
                ("Coffee ratios and grind sizes explained", "Most disappointing coffee comes down to two numbers: how much coffee, and how fine the grind.", ["kitchen-knives"], [0, 1]),
            ],
        },
    },
    "headphones": {
        "choose": {
            "category": "buying-guides",
            "pool": [
                "Over-ear headphones are the most comfortable for long sessions, while earbuds win for portability and exercise.",
                "Active noise cancellation works best on steady low sounds like engines and air conditioning.",
                "For calls, a boom microphone picks up your voice far better than microphones built into the earcups.",
                "Check the battery life with noise cancellation switched on, because that is the number you will actually get.",
                "Multipoint Bluetooth lets you switch between a laptop and a phone without pairing again.",
                "Open-back headphones sound spacious but leak sound, so they suit quiet rooms rather than open offices.",
                "If you wear glasses, look for soft, deep ear cushions that seal without pressing on the arms.",
            ],
            "titles": [
                ("Choosing noise-cancelling headphones for the office", "An open-plan office can be loud, and the right headphones can make it workable.", ["desk-lamps"], [1]),
                ("Earbuds or over-ear headphones?", "The choice between earbuds and over-ear headphones depends more on where you listen than on sound quality.", [], [0]),
                ("The best headphones for video calls", "On video calls, your microphone matters as much to others as the speakers do to you.", ["desk-lamps"], [2]),
            ],
        },
        "care": {
            "category": "care-tips",
            "pool": [
                "Wipe ear cushions and earbud tips weekly with a slightly damp cloth and a drop of mild soap.",
                "Replace ear pads once they flatten or crack; most over-ear models have clip-in pads.",
                "Clean earwax from earbud mesh with a dry, soft brush rather than a wet cloth.",
                "Store headphones in their case so the headband and hinges are not bent in a bag.",
                "Lithium batteries last longest when kept between 20 and 80 percent, so avoid leaving them flat for months.",
                "Let sweaty earbuds dry before putting them back in the charging case.",
            ],
            "titles": [
                ("How to clean your headphones and earbuds", "Headphones sit against your skin for hours, so they need regular cleaning.", [], [0, 2]),
                ("Making headphone batteries last", "The battery is often the first part of wireless headphones to fail, but good habits slow its decline.", [], [4]),
                ("When to replace ear pads", "Worn ear pads change both comfort and sound, and replacing them is cheap and easy.", [], [1]),
            ],
        },
        "use": {
            "category": "home-office",
            "pool": [
                "Keep listening volume below about 60 percent and take a short break every hour.",
                "Turning noise cancellation on without music is a simple way to reduce fatigue in a loud room.",
                "Instrumental music or steady background sound helps many people focus on deep work.",
                "Position the microphone a few centimeters from the corner of your mouth, out of the path of your breath.",
                "Set your computer's input level so your voice peaks at about three quarters of the meter.",
                "Good light on your face and a clear microphone make you look and sound more present on calls.",
            ],
            "titles": [
                ("Focus at home: sound, light and breaks", "Working from home brings its own distractions, and small changes to sound and light help you focus.", ["desk-lamps"], [2]),
                ("Improving your audio on video calls", "Most bad call audio comes from the setup rather than the equipment, and it is easy to fix.", ["desk-lamps"], [3]),
                ("Protecting your hearing with headphones", "Long hours with headphones are fine for your ears, as long as the volume stays sensible.", [], [0]),
            ],
        },
    },
    "desk-lamps": {
        "choose": {
            "category": "buying-guides",
            "pool": [
                "For reading and paperwork, aim for around 500 lux on the desk surface.",
                "Warm light of 2700 to 3000 K suits evenings, while 4000 to 5000 K helps with detailed daytime work.",
                "A color rendering index above 90 makes colors on paper and fabric look true.",
                "An adjustable arm lets you place the light to the side of your screen, away from reflections.",
                "Clamp-mounted lamps save desk space, while weighted bases are easier to move around.",
                "Dimming is worth having, because the right brightness changes through the day.",
                "Look for LEDs without visible flicker, which can cause eye strain over long sessions.",
            ],
            "titles": [
                ("How to choose a desk lamp for your home office", "A good desk lamp lights your work without glare, and costs far less than a new monitor.", [], [0]),
                ("Warm or cool light? Color temperature explained", "Bulbs and lamps are labeled in kelvin, and the number changes how a room feels.", [], [1]),
                ("Architect lamps vs. LED task lamps", "The two most popular desk lamp styles solve the same problem in different ways.", [], [3]),
            ],
        },
        "care": {
            "category": "care-tips",
            "pool": [
                "Dust the shade and diffuser with a microfiber cloth, because dust can cut light output noticeably.",
                "Tighten the tension knobs on a swing-arm lamp when the arm starts to droop.",
                "Unplug the lamp before cleaning and never spray liquid directly onto the switch or the LEDs.",
                "Brass and copper finishes can be waxed to slow tarnishing.",
                "If an LED lamp starts flickering, check the power adapter before blaming the LEDs.",
                "Choose a bulb no stronger than the wattage printed inside the shade.",
            ],
            "titles": [
                ("Keeping your desk lamp in good shape", "Desk lamps need very little care, but a few minutes a year keeps them working like new.", [], [0]),
                ("Fixing a drooping swing-arm lamp", "A swing-arm lamp that won't stay put is usually one adjustment away from working again.", [], [1]),
                ("Choosing the right bulb for an old lamp", "Vintage lamps often deserve a second life with a modern bulb, chosen with care.", [], [5]),
            ],
        },
        "use": {
            "category": "home-office",
            "pool": [
                "Place the lamp on the opposite side from your writing hand to avoid shadows.",
                "Combine overhead light, a task lamp and a little light behind the monitor to reduce contrast.",
                "Position the top of your monitor at or slightly below eye level.",
                "Daylight from the side is ideal, while a window directly behind the screen causes glare.",
                "A soft lamp in front of you and to one side makes your face look better on video calls.",
                "Switch to warmer light in the evening to help you wind down.",
                "Follow the 20-20-20 rule: every twenty minutes, look at something twenty feet away for twenty seconds.",
            ],
            "titles": [
                ("Lighting a home office to reduce eye strain", "Eye strain often comes from poor light rather than from the screen itself.", [], [6]),
                ("Setting up a comfortable home office desk", "A few changes to your desk, chair and lighting make long workdays noticeably easier.", ["headphones"], [2]),
                ("Better lighting for video calls", "You don't need studio lights to look good on a call, just a lamp in the right place.", ["headphones"], [4]),
            ],
        },
    },
    "yoga-mats": {
        "choose": {
            "category": "buying-guides",
            "pool": [
                "Standard mats are around 4 mm thick; go thicker for cushioning or thinner for balance and travel.",
                "Natural rubber grips best but is heavy and smells strongly at first.",
                "Polyurethane tops give excellent grip in sweaty classes, while TPE mats are light and affordable.",
                "Cork becomes grippier when damp, which makes it a favorite for hot yoga.",
                "Taller practitioners should look for a mat of at least 185 cm.",
                "People with latex allergies should avoid natural rubber mats.",
                "A mat that is too soft makes standing balances wobbly.",
            ],
            "titles": [
                ("How to choose a yoga mat", "A yoga mat is a simple object, but thickness, material and grip make a big difference in practice.", [], [0]),
                ("Thick or thin? Finding the right yoga mat thickness", "Thickness is the first number on most yoga mat labels, and it is a trade-off.", [], [0, 6]),
                ("Cork, rubber or TPE: yoga mat materials compared", "Yoga mats are made from a handful of materials, and each behaves differently under sweaty hands.", [], [1, 3]),
            ],
        },
        "care": {
            "category": "care-tips",
            "pool": [
                "Wipe the mat after every practice with a cloth and a mix of water and a little mild soap.",
                "Avoid essential oils and vinegar on natural rubber, as they break the material down over time.",
                "Let the mat dry completely, hanging or flat, before rolling it up.",
                "Keep mats out of direct sunlight, which makes rubber brittle and fades colors.",
                "Roll the mat with the top side facing out to stop the corners curling up.",
                "A new rubber mat may feel slippery, and a gentle scrub with coarse salt helps break it in.",
            ],
            "titles": [
                ("How to clean a yoga mat", "A yoga mat collects sweat and dust with every class, so it needs regular care.", [], [0]),
                ("Breaking in a new yoga mat", "New mats can feel slippery or smell strongly, but both usually fade within weeks.", [], [5]),
                ("Why your yoga mat is curling at the ends", "Curling corners are annoying and even risky in standing poses, and they are easy to fix.", [], [4]),
            ],
        },
        "use": {
            "category": "fitness",
            "pool": [
                "A daily practice of fifteen minutes does more than one long session a week.",
                "Place the mat on a hard, level floor, because soft carpet makes balancing poses harder.",
                "Use blocks and a strap to bring the floor closer rather than forcing a stretch.",
                "Breathe slowly through the nose and let the breath set the pace of movement.",
                "After a run, gentle hip and hamstring stretches on the mat help recovery.",
                "A folded blanket under the knees helps in kneeling poses on a thin mat.",
                "Keep a towel nearby for hot or vigorous classes.",
            ],
            "titles": [
                ("Yoga for runners: a 15-minute routine", "Runners tend to have tight hips and hamstrings, and a short routine on the mat can loosen both.", ["running-shoes", "running-socks"], [4]),
                ("Starting a home yoga practice", "Practicing at home is flexible and free, and it only needs a mat and a little space.", [], [0]),
                ("Stretching after a long run", "A few minutes of stretching after a run helps you feel less stiff the next day.", ["running-shoes"], [4]),
            ],
        },
    },
}

# Image items: pattern swatches. (pattern key, title word, caption phrase)
PATTERNS: list[tuple[str, str, str]] = [
    ("stripes", "diagonal stripe", "bold diagonal stripes"),
    ("pinstripe", "pinstripe", "thin vertical pinstripes"),
    ("gingham", "gingham check", "a small woven gingham check"),
    ("dots", "polka dot", "evenly spaced polka dots"),
    ("chevron", "chevron", "a zigzag chevron pattern"),
    ("waves", "wave", "soft horizontal waves"),
    ("plaid", "plaid", "a two-tone plaid with crossing bands"),
    ("blocks", "color-block", "two large blocks of color split diagonally"),
    ("grid", "grid", "a fine square grid"),
]
SWATCH_USES = [
    "It is a quick reference for picking jacket and pack colors that go together.",
    "Use it as a mood image for a kitchen or home office palette.",
    "The pair of colors also appears across the running and outdoor range.",
    "It works as a neutral backdrop for product photos.",
    "Designers use swatches like this to compare how two colors sit side by side.",
]
