"""The make/model catalogue and the name normalizer (autodetect.catalogue).

The table ``data/listing_names.csv`` was written before the normalizer was tuned, as listings are really
written (misspellings, trims, years, ALL CAPS, foreign spellings, junk, empty seller fields); its
``expected`` column is the class name, or empty where the right answer is unknown or ambiguous.
"""
from __future__ import annotations

import csv
import json
import random
import time
from pathlib import Path

import pytest

from autodetect.catalogue import Label, class_names, clear_caches, load, normalize, normalize_uncached, tokenize
from autodetect.catalogue import catalogue as catalogue_module

TABLE = Path(__file__).parent / "data" / "listing_names.csv"
DATA = Path(catalogue_module.__file__).parent / "data"


def _table() -> list[dict[str, str]]:
    with open(TABLE, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# --- the held-out table ---------------------------------------------------------------------------

def test_listing_table_rates() -> None:
    rows = _table()
    assert len(rows) >= 300
    correct = wrong = unknown = 0
    misses = []
    for r in rows:
        label = normalize_uncached(r["make"], r["model"], r["title"])
        expected = r["expected"] or None
        if label.class_name == expected:
            correct += 1
        elif label.class_name is None:
            unknown += 1
            misses.append(("unknown", r, label))
        else:
            wrong += 1
            misses.append(("WRONG", r, label))
    n = len(rows)
    print(f"\nlisting table: n={n} correct={correct / n:.3f} wrong={wrong / n:.3f} unknown={unknown / n:.3f}")
    for kind, r, label in misses:
        print(f"  {kind}: {r['make']!r} / {r['model']!r} / {r['title']!r} expected {r['expected']!r} "
              f"got {label.class_name!r} ({label.reason})")
    assert correct / n >= 0.97
    assert wrong / n <= 0.01


def test_table_expectations_are_catalogue_classes() -> None:
    names = set(class_names())
    missing = {r["expected"] for r in _table() if r["expected"] and r["expected"] not in names}
    assert not missing


# --- the brief's examples -------------------------------------------------------------------------

@pytest.mark.parametrize("make, model, title, expected", [
    ("Audi", "TT", "2014 Audi TT 2.0T Quattro Coupe", "Audi TT"),
    (None, None, "Audi TT 2.0T Quattro", "Audi TT"),
    ("Audi", "TT 2.0", None, "Audi TT"),
    ("Audi", "TT TDI", None, "Audi TT"),
    (None, None, "audi tt tdi", "Audi TT"),
    ("BMW", "328i", None, "BMW 3 Series"),
    (None, None, "BMW 328i", "BMW 3 Series"),
    ("BMW", None, "2012 BMW 330i", "BMW 3 Series"),
    (None, None, "BMW 335xi coupe", "BMW 3 Series"),
    (None, None, "BMW 320d Touring", "BMW 3 Series"),
    ("Ford", "F-150 XLT SuperCrew", None, "Ford F-150"),
    (None, None, "F-150 XLT SuperCrew", "Ford F-150"),
    (None, None, "2019 FORD F-150 XLT SUPERCREW 4X4", "Ford F-150"),
    ("Ford", "F150", None, "Ford F-150"),
    (None, None, "Chevy Silverado 1500 LT Z71", "Chevrolet Silverado 1500"),
    ("Chevrolet", "Silverado", None, "Chevrolet Silverado 1500"),
    (None, None, "Mercedes C300 4MATIC", "Mercedes-Benz C-Class"),
    ("Mercedes-Benz", "C 250", None, "Mercedes-Benz C-Class"),
    (None, None, "VW Golf GTI MK7", "Volkswagen Golf"),
    ("VW", "Golf GTI", None, "Volkswagen Golf"),
])
def test_examples(make, model, title, expected) -> None:
    label = normalize(make, model, title)
    assert label.class_name == expected, label.reason
    assert label.make and label.model and label.class_name == f"{label.make} {label.model}"
    assert label.method in ("aspects", "title")
    assert 0 < label.confidence <= 1


@pytest.mark.parametrize("make", ["VW", "vw", "Volkswagon", "Volkswagen", "VOLKSWAGEN"])
def test_make_aliases_volkswagen(make) -> None:
    assert normalize(make, "Jetta").class_name == "Volkswagen Jetta"


@pytest.mark.parametrize("make, model, expected", [
    ("Chevy", "Camaro", "Chevrolet Camaro"),
    ("Mercedes", "E350", "Mercedes-Benz E-Class"),
    ("Mercedes Benz", "S550", "Mercedes-Benz S-Class"),
    ("MB", "ML350", "Mercedes-Benz M-Class"),
    ("Merc", "C200", "Mercedes-Benz C-Class"),
    ("Merc", "Grand Marquis", "Mercury Grand Marquis"),  # "Merc" is also Mercury: the model decides
    ("Benz", "G 550", "Mercedes-Benz G-Class"),
    ("Citroën", "C4 Picasso", "Citroen C4 Picasso"),
    ("Škoda", "Octavia", "Skoda Octavia"),
    ("ŠKODA", "Superb", "Skoda Superb"),
    ("Mercedes-Benz", "E-Klasse", "Mercedes-Benz E-Class"),
    ("BMW", "3er", "BMW 3 Series"),
    ("Land Rover", "Range Rover Sport", "Land Rover Range Rover Sport"),
    ("Range Rover", "Sport", "Land Rover Range Rover Sport"),
    ("Mini Cooper", "S", "Mini Cooper"),
    ("Honda", "Jazz", "Honda Fit"),
])
def test_aliases(make, model, expected) -> None:
    assert normalize(make, model).class_name == expected


def test_dodge_ram_is_the_ram_brand() -> None:
    # The Ram pickups were rebadged from Dodge to the Ram brand in 2010: one class, make Ram.
    for make, model, title in [("Dodge", "Ram 1500", None), ("Ram", "1500", None), (None, None, "2008 Dodge Ram 1500 SLT"),
                               ("Dodge", "Ram", "1999 Dodge Ram 1500 Laramie"), ("Dodge", "1500", "2014 Ram 1500")]:
        label = normalize(make, model, title)
        assert (label.class_name, label.make, label.model) == ("Ram 1500", "Ram", "1500"), (make, model, title)
    assert normalize("Dodge", "Ram", "2001 Dodge Ram").class_name == "Ram 1500"  # a bare "Ram" is the 1500
    assert normalize("Dodge", "Ram", "Dodge Ram 2500 Cummins").class_name == "Ram 2500"  # ... unless it says more
    assert normalize(None, None, "Dodge Ram Van B250").class_name == "Dodge Ram Van"  # vans stay Dodge
    assert normalize("Ram", "Dakota").class_name == "Dodge Dakota"


def test_title_refines_a_vague_seller_model() -> None:
    label = normalize("Chevrolet", "Silverado", "2008 Chevrolet Silverado 2500HD Duramax")
    assert label.class_name == "Chevrolet Silverado 2500HD"
    assert label.method == "title"
    assert normalize("Ford", "E-Series Van", "2008 Ford E-350 Super Duty").class_name == "Ford E-350"
    assert normalize("Jeep", "CJ", "1979 Jeep CJ7 Renegade").class_name == "Jeep CJ-7"


# --- refusals: unknown is better than wrong --------------------------------------------------------

@pytest.mark.parametrize("make, model, title", [
    ("Ford", None, None),
    (None, None, "Ford"),
    ("Ford", None, "Ford Truck 4x4"),
    (None, None, "Mustang or Camaro"),
    (None, None, "2010 Ford Mustang GT vs Chevrolet Camaro SS"),
    (None, None, "Honda Civic and Honda Accord package deal"),
    (None, None, "Ford F-150 F-250 tailgate"),
    ("Ford", "Super Duty", None),
    (None, None, "Chevrolet"),
    (None, None, "Ram"),
    (None, None, "Mercedes"),
    (None, None, "Continental 2017"),  # a Lincoln or a Bentley
    (None, None, "Sport Coupe 2dr"),
    (None, None, "NO RESERVE!! CLEAN TITLE"),
    (None, None, ""),
    (None, None, None),
    ("Toyota", "Camry", "2010 Honda Accord EX"),  # seller fields and title name different cars
    ("Harley-Davidson", "Sportster", "2008 Harley-Davidson Sportster 1200"),
    ("Freightliner", "Cascadia", "2016 Freightliner Cascadia 125 sleeper"),
    (None, None, "1970 Chevrolet Chevelle SS 454"),  # not in the catalogue; "SS" alone must not win
    (None, None, "Porsche Carrera GT"),  # not the 911
    ("GMC", "Sierra", "GMC Sierra Denali HD"),  # HD: a 2500 or a 3500, not the default 1500
])
def test_refusals(make, model, title) -> None:
    label = normalize(make, model, title)
    assert label.class_name is None, label
    assert (label.make, label.model, label.method, label.confidence) == (None, None, "unknown", 0.0)
    assert label.reason


def test_make_field_disagrees_with_title() -> None:
    label = normalize("Chevrolet", "Sierra", "2015 GMC Sierra 1500 SLT")
    assert label.class_name == "GMC Sierra 1500"
    assert "disagrees" in label.reason
    assert label.confidence < 0.9
    label = normalize("Ford", "Mustang", "2012 Chevrolet Camaro 2SS")
    assert label.class_name is None and "contradicts" in label.reason


def test_seller_fields_win_over_trim_words_in_the_title() -> None:
    label = normalize("Ford", "Bronco", "1978 Ford Bronco Ranger XLT 4x4")
    assert label.class_name == "Ford Bronco" and label.method == "aspects"
    assert normalize("Kia", "Forte", "2014 KIA FORTE KOUP SX").class_name == "Kia Forte"


# --- fuzzy matching --------------------------------------------------------------------------------

@pytest.mark.parametrize("make, model, title, expected", [
    ("Toyota", "Camery", None, "Toyota Camry"),
    ("Toyta", "Camry", None, "Toyota Camry"),
    ("Chevorlet", "Silverado", None, "Chevrolet Silverado 1500"),
    ("Porsche", "Cayanne", None, "Porsche Cayenne"),
    ("Jeep", "Grand Cherokke", None, "Jeep Grand Cherokee"),
    ("Hyundia", "Elantra", "2016 Hyundia Elantra SE", "Hyundai Elantra"),
    (None, None, "1999 Toyta Camery XLE Sedan", "Toyota Camry"),
    ("Ford", None, "Ford Expidition Eddie Bauer", "Ford Expedition"),
])
def test_fuzzy(make, model, title, expected) -> None:
    label = normalize(make, model, title)
    assert label.class_name == expected, label.reason
    assert label.method == "fuzzy"
    assert 0.7 <= label.confidence < 1


def test_fuzzy_refuses_real_other_names() -> None:
    # one letter away from a catalogue model, but a different car
    assert normalize("Chevrolet", "Chevelle").class_name is None  # not the Chevette
    assert normalize("Toyota", "RAV5").class_name is None  # digits never fuzzy-match (an X5 is not an X6)


# --- the catalogue ---------------------------------------------------------------------------------

def test_catalogue_shape() -> None:
    cat = load()
    names = class_names()
    assert len(names) > 1000 and len(names) == len(set(names))
    for c in cat.classes.values():
        assert c.name == f"{c.make} {c.model}"
        assert c.source in ("vpic", "family", "curated")
    makes = {c.make for c in cat.classes.values()}
    assert {"Ford", "Chevrolet", "Toyota", "Mercedes-Benz", "BMW", "Volkswagen", "Ram", "Skoda"} <= makes
    assert not {"Kenworth", "Harley-Davidson", "Forest River", "International"} & makes
    for expected in ["BMW 3 Series", "Mercedes-Benz C-Class", "Ford F-150", "Chevrolet Silverado 1500",
                     "Ram 1500", "Audi TT", "Volkswagen Golf", "Mazda MX-5 Miata"]:
        assert expected in cat.classes
    for merged in ["Volkswagen GTI", "Audi TTS", "BMW 328i", "Dodge Ram", "Chevrolet Silverado"]:
        assert merged not in cat.classes
    assert cat.classes["Ford F-150"].source == "vpic" and cat.classes["BMW 3 Series"].source == "family"


def test_data_files_are_compact_and_traceable() -> None:
    csv_path = DATA / "vpic_models.csv"
    assert csv_path.stat().st_size + (DATA / "curated.json").stat().st_size < 400_000
    first = csv_path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# NHTSA vPIC") and "regenerate" in first
    curated = json.loads((DATA / "curated.json").read_text(encoding="utf-8"))
    assert {"makes", "families", "ambiguous", "extra_models", "weak_aliases"} <= set(curated)


def test_regenerate_documents_its_source() -> None:
    from autodetect.catalogue import regenerate

    doc = regenerate.__doc__ or ""
    assert "python -m autodetect.catalogue.regenerate" in doc and "ultravin" in doc and "vPIC" in doc
    # the filter keeps light vehicles and drops trailers, motorcycles and chassis entries
    assert regenerate.is_light({"types": {"PASSENGER CAR": 3}, "bodies": {"Sedan/Saloon": 3}})
    assert not regenerate.is_light({"types": {"TRAILER": 3}, "bodies": {"Trailer": 3}})
    assert not regenerate.is_light({"types": {"MOTORCYCLE": 1}, "bodies": {"Motorcycle - Sport": 1}})
    assert regenerate.DROP_MODEL.search("Motorhome Chassis")
    assert regenerate.clean_model("LAND CRUISER") == "Land Cruiser"
    assert regenerate.clean_model("Prius Prime (PHEV)") == "Prius Prime"


def test_tokenize() -> None:
    assert tokenize("2019 FORD F-150 XLT 6-speed, 4 dr!!") == ["2019", "ford", "f", "150", "xlt"]
    assert tokenize("Škoda Octavia 2.0 TDI") == ["skoda", "octavia", "2.0", "tdi"]
    assert tokenize("Kia cee'd & co 🔥") == ["kia", "ceed", "and", "co"]


def test_label_is_cached_and_immutable() -> None:
    a = normalize("VW", "Golf", "VW Golf GTI MK7")
    assert normalize("VW", "Golf", "VW Golf GTI MK7") is a
    assert isinstance(a, Label)
    with pytest.raises(AttributeError):
        a.class_name = "x"  # type: ignore[misc]


def test_throughput() -> None:
    """>= 20,000 normalizations per second of CPU time on distinct listings (cold caches)."""
    rows = [(r["make"], r["model"], r["title"]) for r in _table()]
    rng = random.Random(0)
    data = [(mk, md, f"{rng.randint(1960, 2024)} {ti} #{i}") for i, (mk, md, ti) in
            enumerate(rows[i % len(rows)] for i in range(20_000))]
    load()
    best = 0.0
    for _ in range(3):
        clear_caches()
        t = time.process_time()
        for mk, md, ti in data:
            normalize(mk, md, ti)
        best = max(best, len(data) / max(time.process_time() - t, 1e-9))
    print(f"\nthroughput: {best:,.0f} distinct normalizations/s (CPU time, cold caches)")
    assert best >= 20_000


# --- the sandbox marketplace's cars -----------------------------------------------------------------

#: Names the sandbox (autodetect/sandbox/cars.py) uses as aliases/trims/misspellings of one model that are
#: in fact a *different* catalogue model (NHTSA vPIC lists them separately), so the normalizer is right to
#: answer the other class. Listings carrying them are counted apart, not as errors. Reported for a fix
#: in the sandbox; once fixed these no longer match anything.


def test_sandbox_cars() -> None:
    cars = pytest.importorskip("autodetect.sandbox.cars")
    names = set(class_names())
    missing = [spec.class_name for spec in cars.CARS if spec.class_name not in names]
    assert not missing, f"sandbox classes missing from the catalogue: {missing}"

    rng = random.Random(2024)
    correct = wrong = unknown = 0
    misses = []
    for _ in range(4000):
        spec = rng.choice(cars.CARS)
        year = rng.randint(*spec.years)
        aspects = cars.seller_aspects(spec, rng, year)
        title = cars.make_title(spec, rng, year)
        label = normalize(aspects["Make"], aspects["Model"], title)
        if label.class_name == spec.class_name:
            correct += 1
        elif label.class_name is None:
            unknown += 1
            misses.append(("unknown", spec.class_name, aspects, title, label.reason))
        else:
            wrong += 1
            misses.append(("WRONG", spec.class_name, aspects, title, label.class_name, label.reason))
    n = correct + wrong + unknown
    print(f"\nsandbox listings: n={n} correct={correct / n:.4f} wrong={wrong / n:.4f} unknown={unknown / n:.4f}")
    for m in misses[:20]:
        print("  ", m)
    assert wrong == 0
    assert correct / n >= 0.99
