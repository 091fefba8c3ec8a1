"""Rebuild ``data/vpic_models.csv`` from NHTSA's vPIC database.

Run it as ``python -m autodetect.catalogue.regenerate`` (needs network access to PyPI, or
``--ultravin-dir`` pointing at an unpacked ``ultravin`` wheel). Nothing at runtime imports this module.

Where the data comes from
-------------------------
NHTSA publishes the whole vPIC vehicle database (every make, model and VIN-decoding rule that
manufacturers file with NHTSA) as a public-domain download. The PyPI package ``ultravin`` (MIT; a Rust
VIN decoder) embeds a mechanically transformed copy of a monthly vPIC release in its binary, and offers
no table of models, but it offers ``ultravin.sweep()``: one VIN for every row of every decoding
dimension (WMI, pattern, engine, vehicle spec, exception, default), ~590,000 VINs whose decodes reach
every make/model pair that any decoding pattern can produce. We decode all of them and aggregate
``Make``, ``Model``, ``Vehicle Type``, ``Body Class`` and model years per (make, model). The vPIC data
month and the artifact hash are written into the CSV header so a rebuild is traceable.

The ``ultravin`` wheel is not a runtime (or even a development) dependency: when it is not importable,
this script runs ``pip download --no-deps ultravin==<pinned>`` into a temporary directory and puts the
unpacked wheel on ``sys.path`` (it is an abi3 wheel with no runtime dependency besides ``typer`` for its
CLI, which we don't use).

What is kept
------------
1. Makes: an explicit allow-list of mainstream passenger-vehicle makes (``MAKES`` below: vPIC name ->
   display name). It drops trailer, motorcycle, bus, RV and heavy-truck builders, coachbuilders and
   replica shops (vPIC lists ~12,000 makes, most with one or two models).
2. Models: a (make, model) pair is kept when at least one of its decodes is a light vehicle: a body class
   in ``LIGHT_BODIES`` (sedan, coupe, SUV, pickup, van, ...), or a passenger car / MPV vehicle type whose
   body classes are not motorcycle/bus/incomplete/etc. Chassis cabs, cutaways, motorhome chassis,
   school buses and tractors are dropped, and so are names matching ``DROP_MODEL`` (vPIC fleet and
   chassis entries such as "Motorhome Chassis" or "Hearse/Limo").
3. Names: vPIC spells models inconsistently ("LAND CRUISER", "Prius Prime (PHEV)", "Mazda3",
   "240 Series"). ``clean_model`` strips parenthesised notes, fixes all-caps words, and
   ``curated.json["vpic_renames"]`` / ``["vpic_drop"]`` hold the hand-made corrections (e.g. Toyota's
   "SCION tC" becomes make Scion, model tC). The raw vPIC names are kept in the CSV.

Model *families* (BMW "328i" -> "3 Series") and aliases are not applied here: they live in
``curated.json`` and are applied when the catalogue is loaded (``catalogue.py``), so that the data file
stays a faithful, reviewable extract of vPIC.
"""
from __future__ import annotations

import argparse
import atexit
import collections
import csv
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ULTRAVIN_VERSION = "3.0.2"
DATA_DIR = Path(__file__).resolve().parent / "data"
OUT = DATA_DIR / "vpic_models.csv"
CURATED = DATA_DIR / "curated.json"

#: vPIC make name -> display name. Mainstream passenger-car, SUV, pickup and van makes sold in North
#: America since 1981 (vPIC's coverage), plus the European ones vPIC knows about.
MAKES: dict[str, str] = {
    "ACURA": "Acura", "ALFA ROMEO": "Alfa Romeo", "AMERICAN MOTORS": "AMC", "ASTON MARTIN": "Aston Martin",
    "AUDI": "Audi", "BENTLEY": "Bentley", "BMW": "BMW", "BUGATTI": "Bugatti", "BUICK": "Buick",
    "CADILLAC": "Cadillac", "CHEVROLET": "Chevrolet", "CHRYSLER": "Chrysler", "DAEWOO": "Daewoo",
    "DATSUN": "Datsun", "DELOREAN": "DeLorean", "DODGE": "Dodge", "EAGLE": "Eagle", "FERRARI": "Ferrari",
    "FIAT": "Fiat", "FISKER": "Fisker", "FORD": "Ford", "GENESIS": "Genesis", "GEO": "Geo", "GMC": "GMC",
    "HONDA": "Honda", "HUMMER": "Hummer", "HYUNDAI": "Hyundai", "INEOS": "Ineos", "INFINITI": "Infiniti",
    "ISUZU": "Isuzu", "JAGUAR": "Jaguar", "JEEP": "Jeep", "KARMA": "Karma", "KIA": "Kia",
    "LAMBORGHINI": "Lamborghini", "LAND ROVER": "Land Rover", "LEXUS": "Lexus", "LINCOLN": "Lincoln",
    "LOTUS": "Lotus", "LUCID": "Lucid", "MASERATI": "Maserati", "MAYBACH": "Maybach", "MAZDA": "Mazda",
    "MCLAREN": "McLaren", "MERCEDES-BENZ": "Mercedes-Benz", "MERCURY": "Mercury", "MERKUR": "Merkur",
    "MINI": "Mini", "MITSUBISHI": "Mitsubishi", "NISSAN": "Nissan", "OLDSMOBILE": "Oldsmobile",
    "OPEL": "Opel", "PEUGEOT": "Peugeot", "PLYMOUTH": "Plymouth", "POLESTAR": "Polestar",
    "PONTIAC": "Pontiac", "PORSCHE": "Porsche", "RAM": "Ram", "RENAULT": "Renault", "RIVIAN": "Rivian",
    "ROLLS-ROYCE": "Rolls-Royce", "SAAB": "Saab", "SATURN": "Saturn", "SMART": "Smart", "SUBARU": "Subaru",
    "SUZUKI": "Suzuki", "TESLA": "Tesla", "TOYOTA": "Toyota", "VINFAST": "VinFast",
    "VOLKSWAGEN": "Volkswagen", "VOLVO": "Volvo",
}

LIGHT_BODIES = {
    "Sedan/Saloon", "Coupe", "Convertible/Cabriolet", "Hatchback/Liftback/Notchback", "Wagon",
    "Sport Utility Vehicle [SUV]/Multipurpose Vehicle [MPV]", "Crossover Utility Vehicle [CUV]", "Pickup",
    "Van", "Cargo Van", "Minivan", "Sport Utility Truck [SUT]", "Roadster", "Limousine",
}
BAD_BODY_PREFIXES = ("Motorcycle", "Low Speed", "Off-", "Off-road", "Trailer", "Bus", "Truck-Tractor", "Fire",
                     "Motorhome", "Street", "Ambulance", "Step Van", "Incomplete")
LIGHT_TYPES = {"PASSENGER CAR", "MULTIPURPOSE PASSENGER VEHICLE (MPV)"}
#: vPIC "models" that are chassis, fleet or body-builder entries rather than a car one would photograph.
DROP_MODEL = re.compile(
    r"chassis|incomplete|cutaway|motor ?home|\bbus\b|hearse|limo\b|limousine|funeral|armou?red|military|"
    r"conventional|forward control|\btilt\b|coachbuilder|first call|ski cruiser|recreational vehicle|"
    r"^\d+ ton$|^'|electric vehicle$|passenger car$|^other$", re.I)
BODY_KIND = {
    "Pickup": "pickup", "Sport Utility Truck [SUT]": "pickup", "Van": "van", "Cargo Van": "van",
    "Minivan": "van", "Sport Utility Vehicle [SUV]/Multipurpose Vehicle [MPV]": "suv",
    "Crossover Utility Vehicle [CUV]": "suv",
}
KEEP_UPPER = {"AMG", "EUV", "GTI", "GLI", "SRT", "TRX", "XL", "EV"}


def clean_model(name: str) -> str:
    """Mechanical clean-up of a vPIC model name (see the module docstring)."""
    name = re.sub(r"\s*\([^)]*\)\s*", " ", name).strip()
    name = re.sub(r"\s+", " ", name)
    words = []
    for w in name.split(" "):
        letters = re.sub(r"[^A-Za-z]", "", w)
        if (len(letters) >= 4 and letters.isupper() and re.search(r"[AEIOUY]", letters)
                and w not in KEEP_UPPER and not re.search(r"\d", w)):
            w = "-".join(p[:1] + p[1:].lower() for p in w.split("-"))
        words.append(w)
    return " ".join(words)


def import_ultravin(ultravin_dir: str | None):
    if ultravin_dir:
        sys.path.insert(0, ultravin_dir)
    try:
        import ultravin  # noqa: F401
        return sys.modules["ultravin"]
    except ImportError:
        pass
    tmp = Path(tempfile.mkdtemp(prefix="ultravin-"))
    atexit.register(shutil.rmtree, tmp, True)  # the extension stays loaded after its files are gone
    print(f"ultravin is not importable; downloading ultravin=={ULTRAVIN_VERSION} into {tmp}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(tmp),
                    f"ultravin=={ULTRAVIN_VERSION}"], check=True)
    wheel = next(tmp.glob("ultravin-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp / "x")
    sys.path.insert(0, str(tmp / "x"))
    import ultravin
    return ultravin


def aggregate(ultravin) -> dict[tuple[str, str], dict]:
    vins = ultravin.sweep()
    agg: dict[tuple[str, str], dict] = collections.defaultdict(
        lambda: {"types": collections.Counter(), "bodies": collections.Counter(), "years": set()})
    for i in range(0, len(vins), 50_000):
        for r in json.loads(ultravin.decode_batch_json(vins[i:i + 50_000])):
            a = r["attributes"]
            make, model = a.get("Make") or "", (a.get("Model") or "").strip()
            if make not in MAKES or not model:
                continue
            e = agg[(make, model)]
            e["types"][a.get("Vehicle Type") or ""] += 1
            e["bodies"][a.get("Body Class") or ""] += 1
            if r.get("model_year"):
                e["years"].add(int(r["model_year"]))
    return agg


def is_light(e: dict) -> bool:
    if any(b in LIGHT_BODIES for b in e["bodies"]):
        return True
    return (any(t in LIGHT_TYPES for t in e["types"])
            and not any(b.startswith(BAD_BODY_PREFIXES) for b in e["bodies"] if b))


def build_rows(agg: dict, curated: dict) -> list[dict]:
    renames = curated.get("vpic_renames", {})
    drops = {k.upper() for k in curated.get("vpic_drop", [])}
    rows = []
    for (vmake, vmodel), e in sorted(agg.items()):
        if not is_light(e) or DROP_MODEL.search(vmodel) or f"{vmake}|{vmodel}".upper() in drops:
            continue
        make, model = MAKES[vmake], clean_model(vmodel)
        key = f"{vmake}|{vmodel}"
        if key in renames:
            make, model = renames[key].split("|", 1)
        light = [b for b in e["bodies"] if b in LIGHT_BODIES]
        body = max(light, key=lambda b: e["bodies"][b]) if light else ""
        years = sorted(e["years"]) or [0]
        rows.append({"make": make, "model": model, "vpic_make": vmake, "vpic_model": vmodel,
                     "year_min": years[0], "year_max": years[-1], "kind": BODY_KIND.get(body, "car")})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ultravin-dir", help="directory holding an unpacked ultravin wheel")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    t0 = time.time()
    ultravin = import_ultravin(args.ultravin_dir)
    prov = ultravin.provenance()
    curated = json.loads(CURATED.read_text(encoding="utf-8"))
    rows = build_rows(aggregate(ultravin), curated)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        f.write(f"# NHTSA vPIC {prov['data_month']} via ultravin {prov['decoder_version']} "
                f"(artifact blake3 {prov['artifact_blake3'][:16]}); "
                f"regenerate with: python -m autodetect.catalogue.regenerate\n")
        w = csv.DictWriter(f, fieldnames=["make", "model", "vpic_make", "vpic_model", "year_min", "year_max", "kind"])
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} models of {len({r['make'] for r in rows})} makes to {args.out} "
          f"in {time.time() - t0:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
