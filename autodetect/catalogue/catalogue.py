"""The canonical make/model catalogue and its lookup indexes.

Two data files build it (both under ``data/``):

* ``vpic_models.csv`` — makes and models extracted from NHTSA vPIC by ``regenerate.py`` (one row per vPIC
  model, with display names already cleaned).
* ``curated.json`` — hand-curated knowledge vPIC lacks: make aliases, model families (BMW "328i" ->
  "3 Series", Mercedes "C300" -> "C-Class"), merges of trims that vPIC lists as models (VW "Golf GTI" ->
  "Golf"), ambiguous aliases ("Silverado" may be a 1500 or a 2500HD; 1500 unless the title says more),
  European-market models, weak aliases and common words.

A *class* is "{Make} {Model}" with canonical spelling. Every vPIC model becomes a class unless a family
absorbs it; family and curated classes are added. The indexes map a *key* — the lower-case, accent-free
concatenation of a name's tokens ("F-150", "F 150" and "f150" all give ``f150``) — to the classes it may
mean. Text is matched by looking up n-grams of its tokens, so spacing and punctuation never matter.

Granularity (what counts as one class):

* A class is a model line as NHTSA names it, spelled as the maker does ("Mercedes-Benz C-Class",
  "Mazda MX-5 Miata", "Mazda Mazda3"). Names are ASCII ("Citroen", "Skoda").
* Trims, engines, drivetrains, body styles and performance versions sold under the model's name merge
  into it: VW Golf GTI / Golf R / Golf SportWagen -> Golf, Civic Si / Type R -> Civic, Audi TTS / TT RS ->
  TT, Elantra GT -> Elantra, long-wheelbase versions (Escalade ESV, Yukon XL, Expedition MAX) -> the model.
* Model codes map to the line: BMW 328i/M340i -> 3 Series, Mercedes C300/C63 AMG -> C-Class, 560SEL ->
  S-Class, Lexus RX350 -> RX, Infiniti G37x -> G37. The M cars (M3, M5) stay separate, as vPIC has them.
* Distinct vehicles that share part of a name stay separate: Transit Connect, Corolla Cross, Range Rover
  Sport, Mustang Mach-E, Prius c / Prius v, Rogue Sport, Countryman. Before 2015 the WRX was an Impreza
  trim (vPIC), so "Impreza WRX" is an Impreza.
* GM's heavy-duty pickups are their own classes (Silverado 2500HD/3500HD, Sierra 2500HD/3500HD); a bare
  "Silverado"/"Sierra" means the 1500 unless the text says HD/2500/3500.

Dodge Ram and Ram: the pickups are one continuous line, rebadged from Dodge to the Ram brand in 2010, so
"Dodge Ram 1500" and "Ram 1500" are the same class, ``Ram 1500`` (make Ram). A bare "Dodge Ram" means
the 1500 unless the text names a 2500/3500. Dodge's vans (Ram Van) and the Dakota stay Dodge.
"""
from __future__ import annotations

import csv
import functools
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"

_DECIMAL = re.compile(r"(?<=\d)\.(?=\d)")
_NON_ALNUM = re.compile(r"[^a-z0-9\x00]+")
_YEAR_LIKE = re.compile(r"(19[0-9]{2}|20[0-3][0-9])")
#: Units after a number: "6-speed", "4 door", "7 seats", "1 owner", "3rd row" are never a model.
_UNITS = frozenset("""speed speeds spd sp door doors dr cyl cylinder cylinders passenger passengers pass seat seats
seater owner owners valve mpg k km miles mi mile inch ft wd wb hp kw kwh ah ton tons gal litre liter row st nd rd th
cc bhp ps yr years year gear""".split())
_ATTACHED_UNIT = re.compile(r"^\d+(?:speed|spd|door|dr|cyl|mpg|k|km|hp|kw|kwh|ah|wd|st|nd|rd|th|x\d|owner|valve)$")


def _strip_accents(text: str) -> str:
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c))


@functools.lru_cache(maxsize=65536)
def _tokenize(text: str) -> tuple[str, ...]:
    return tuple(_tokenize_uncached(text))


def tokenize(text: str | None) -> list[str]:
    """Lower-case, accent-free alphanumeric tokens (see ``_tokenize_uncached``); cached per string."""
    return list(_tokenize(text)) if text else []


def _tokenize_uncached(text: str | None) -> list[str]:
    """Lower-case, accent-free alphanumeric tokens; decimal numbers ("2.0", "5.7") stay one token.

    Hyphens, slashes and other punctuation separate tokens; apostrophes vanish ("cee'd" -> "ceed");
    "&" becomes "and". Numbers followed by a unit ("6-speed", "4 dr", "1 owner") are dropped.
    """
    if not text:
        return []
    text = _strip_accents(text).lower()
    if "&" in text:
        text = text.replace("&", " and ")
    if "'" in text or "\u2019" in text or "ß" in text:
        text = text.replace("'", "").replace("\u2019", "").replace("ß", "ss")
    if "." in text:
        text = _DECIMAL.sub("\x00", text)
        raw = _NON_ALNUM.sub(" ", text).replace("\x00", ".").split()
    else:
        raw = _NON_ALNUM.sub(" ", text).split()
    out: list[str] = []
    skip = False
    last = len(raw) - 1
    for i, t in enumerate(raw):
        if skip:
            skip = False
            continue
        if t[0].isdigit():
            if t.isdigit():
                if i < last and raw[i + 1] in _UNITS:
                    skip = True
                    continue
            elif _ATTACHED_UNIT.match(t):
                continue
        out.append(t)
    return out


def key_of(text: str) -> str:
    """The lookup key of a name: its tokens concatenated ("Mercedes-Benz" -> "mercedesbenz")."""
    return "".join(tokenize(text))


@dataclass(frozen=True)
class CarClass:
    """One class of the catalogue (a label the CNN learns)."""
    name: str
    make: str
    model: str
    source: str  # "vpic", "family" (a hand-made family over vPIC models) or "curated" (not in vPIC)
    vpic_models: tuple[str, ...] = ()
    year_min: int | None = None
    year_max: int | None = None
    kind: str = "car"  # car, suv, pickup, van


@dataclass(frozen=True)
class Entry:
    """What one key may mean within one make."""
    classes: frozenset[str]
    default: str | None = None  # the class to pick when nothing narrows an ambiguous key
    weak: bool = False  # also an ordinary trim/body word: used only when nothing stronger is found
    not_with: frozenset[str] = frozenset()  # keys that, anywhere in the text, cancel the default
    blocked: bool = False  # a model outside the catalogue that a shorter name would mislabel: refuse


@dataclass(eq=False)
class Catalogue:
    classes: dict[str, CarClass]
    makes: tuple[str, ...]
    #: key -> list of (make, model-prefix tokens); several makes only for an ambiguous alias ("merc")
    make_keys: dict[str, tuple[tuple[str, tuple[str, ...]], ...]]
    model_index: dict[str, dict[str, Entry]]
    patterns: dict[str, tuple[re.Pattern, tuple[tuple[str, str | None], ...]]]
    global_index: dict[str, frozenset[str]]
    fuzzy_model_keys: dict[str, list[str]]
    fuzzy_make_keys: list[str]
    max_make_ngram: int = 3
    #: every string prefix of every model key of a make: a token that is not one cannot start a name
    key_prefixes: dict[str, frozenset[str]] = field(default_factory=dict)
    make_prefixes: frozenset[str] = frozenset()
    notes: dict[str, str] = field(default_factory=dict)

    def class_names(self) -> list[str]:
        return sorted(self.classes)

    def models_of(self, make: str) -> list[str]:
        return sorted(c.model for c in self.classes.values() if c.make == make)

    def pattern_entry(self, make: str, key: str) -> Entry | None:
        """A make's model-code patterns ("c300", "328i", "rx350") over one key."""
        pat = self.patterns.get(make)
        if pat is None:
            return None
        m = pat[0].fullmatch(key)
        if m is None:
            return None
        target, _ = pat[1][int(m.lastgroup[1:])]
        if target.startswith("base:"):
            return self.model_index[make].get(m.group(target[5:]))
        return Entry(frozenset([target]))


def _class_name(make: str, model: str) -> str:
    return f"{make} {model}"


def _load_vpic(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        lines = [ln for ln in f if not ln.startswith("#")]
    return list(csv.DictReader(lines))


def build(data_dir: Path = DATA_DIR) -> Catalogue:
    cur = json.loads((data_dir / "curated.json").read_text(encoding="utf-8"))
    rows = _load_vpic(data_dir / "vpic_models.csv")
    families: dict[str, dict[str, dict]] = cur.get("families", {})
    weak_keys = {key_of(w) for w in cur.get("weak_aliases", [])}
    not_global = {key_of(w) for w in cur.get("not_global", [])}

    classes: dict[str, CarClass] = {}
    aliases: dict[str, dict[str, set[str]]] = {}  # make -> key -> classes

    def add_alias(make: str, text: str, cls: str) -> None:
        k = key_of(text)
        if k:
            aliases.setdefault(make, {}).setdefault(k, set()).add(cls)

    def family_target(make: str, fam_model: str, spec: dict) -> tuple[str, str]:
        if "target" in spec:
            tm, tmod = spec["target"].split("|", 1)
            return tm, tmod
        return make, fam_model

    absorbers: dict[str, list[tuple[re.Pattern, str, str]]] = {}
    for make, fams in families.items():
        for fam_model, spec in fams.items():
            if "absorb" in spec:
                tm, tmod = family_target(make, fam_model, spec)
                absorbers.setdefault(make, []).append((re.compile(spec["absorb"], re.I), tm, tmod))

    # 1. vPIC models, merged into families where a family absorbs them
    merged: dict[str, dict] = {}
    for r in rows:
        make, model = r["make"], r["model"]
        target = (make, model)
        for rx, tm, tmod in absorbers.get(make, ()):
            if rx.fullmatch(model) or rx.fullmatch(r["vpic_model"]):
                target = (tm, tmod)
                break
        name = _class_name(*target)
        m = merged.setdefault(name, {"make": target[0], "model": target[1], "vpic": [], "ymin": 9999, "ymax": 0,
                                     "kinds": {}, "direct": False})
        m["direct"] |= target == (make, model)
        m["vpic"].append(f"{r['vpic_make']}|{r['vpic_model']}")
        m["ymin"] = min(m["ymin"], int(r["year_min"] or 9999))
        m["ymax"] = max(m["ymax"], int(r["year_max"] or 0))
        m["kinds"][r["kind"]] = m["kinds"].get(r["kind"], 0) + 1
        add_alias(make, model, name)
        add_alias(make, r["vpic_model"], name)
        if target[0] != make:  # cross-make family: the target make knows the name too
            add_alias(target[0], target[1], name)
    for name, m in merged.items():
        source = "vpic" if m["direct"] else "family"
        classes[name] = CarClass(name, m["make"], m["model"], source, tuple(m["vpic"]),
                                 m["ymin"] if m["ymin"] < 9999 else None, m["ymax"] or None,
                                 max(m["kinds"], key=m["kinds"].get))

    # 2. curated (non-vPIC) models
    for make, models in cur.get("extra_models", {}).items():
        for model in models:
            name = _class_name(make, model)
            if name not in classes:
                classes[name] = CarClass(name, make, model, "curated")
            add_alias(make, model, name)

    # 3. families: create the family classes that vPIC did not already give, then their aliases
    for make, fams in families.items():
        for fam_model, spec in fams.items():
            tm, tmod = family_target(make, fam_model, spec)
            name = _class_name(tm, tmod)
            if name not in classes:
                classes[name] = CarClass(name, tm, tmod, "family")
            add_alias(make, fam_model, name)
            for a in spec.get("aliases", ()):
                add_alias(make, a, name)

    # 4. automatic aliases: Mercedes "X-Class" is also "X-Klasse"; a model spelled with its make ("Mazda3")
    for c in list(classes.values()):
        m = re.fullmatch(r"([A-Z]+)-Class(.*)", c.model)
        if m:
            add_alias(c.make, f"{m.group(1)}-Klasse{m.group(2)}", c.name)
            add_alias(c.make, f"{m.group(1)} Class{m.group(2)}", c.name)

    makes = tuple(sorted({c.make for c in classes.values()} | set(cur.get("makes", {}))))

    # 5. per-make index: key -> Entry (collisions within a make become ambiguous)
    model_index: dict[str, dict[str, Entry]] = {}
    for make, keys in aliases.items():
        idx = model_index.setdefault(make, {})
        for k, cls in keys.items():
            weak = k in weak_keys or (k.isdigit() and (len(k) <= 2 or bool(_YEAR_LIKE.fullmatch(k))))
            idx[k] = Entry(frozenset(cls), None, weak)
    for make, amb in cur.get("ambiguous", {}).items():
        idx = model_index.setdefault(make, {})
        for alias, spec in amb.items():
            targets = frozenset(_class_name(make, m) if _class_name(make, m) in classes else _target_name(families, make, m)
                                for m in spec["models"])
            missing = [t for t in targets if t not in classes]
            if missing:
                raise ValueError(f"curated ambiguous alias {make}/{alias} names unknown classes {missing}")
            default = spec.get("default")
            default = (_class_name(make, default) if _class_name(make, default) in classes
                       else _target_name(families, make, default)) if default else None
            idx[key_of(alias)] = Entry(targets, default, key_of(alias) in weak_keys,
                                       frozenset(key_of(w) for w in spec.get("not_with", ())))
    for make, keys in cur.get("blocked", {}).items():
        for k in keys:
            model_index.setdefault(make, {})[key_of(k)] = Entry(frozenset(), blocked=True)

    # 6. patterns (model codes), one alternation per make; group i -> (target class or "base:<group>")
    patterns: dict[str, tuple[re.Pattern, tuple[tuple[str, str | None], ...]]] = {}
    base_specs = cur.get("base_patterns", {})
    for make in makes:
        alts: list[str] = []
        targets: list[tuple[str, str | None]] = []
        for fam_model, spec in families.get(make, {}).items():
            tm, tmod = family_target(make, fam_model, spec)
            for p in spec.get("patterns", ()):
                alts.append(f"(?P<p{len(targets)}>{p})")
                targets.append((_class_name(tm, tmod), p))
        for p in base_specs.get(make, ()):
            inner = p.replace("(?P<base>", f"(?P<b{len(targets)}>")
            alts.append(f"(?P<p{len(targets)}>{inner})")
            targets.append((f"base:b{len(targets)}", p))
        if alts:
            patterns[make] = (re.compile("|".join(alts)), tuple(targets))

    # 7. make keys
    make_keys: dict[str, list[tuple[str, tuple[str, ...]]]] = {}

    def add_make(text: str, make: str, prefix: tuple[str, ...] = ()) -> None:
        k = key_of(text)
        if k and (make, prefix) not in make_keys.setdefault(k, []):
            make_keys[k].append((make, prefix))

    for make in makes:
        add_make(make, make)
        for a in cur.get("makes", {}).get(make, ()):
            add_make(a, make)
    for alias, (make, prefix) in cur.get("make_prefix_aliases", {}).items():
        add_make(alias, make, tuple(tokenize(prefix)))
    for alias, ms in cur.get("ambiguous_make_aliases", {}).items():
        make_keys[key_of(alias)] = [(m, ()) for m in ms]
    max_ngram = max(len(tokenize(a)) for a in list(makes) + [a for v in cur.get("makes", {}).values() for a in v])

    # 8. global index: distinctive model names alone identify the make ("Camry", "F-150", "Silverado 1500")
    glob: dict[str, set[str]] = {}
    for make, idx in model_index.items():
        for k, e in idx.items():
            # two-character codes ("X3", "R2", "A4") are left out: alone they also name other makes' vehicles
            # outside the catalogue (a Can-Am Maverick X3, a Studebaker Avanti R2)
            if e.weak or e.blocked or k.isdigit() or len(k) < 3 or k in not_global:
                continue
            glob.setdefault(k, set()).update(e.classes if len(e.classes) == 1 else ())
            if len(e.classes) > 1 and e.default:
                glob.setdefault(k, set()).add(e.default)
    global_index = {k: frozenset(v) for k, v in glob.items() if v}

    fuzzy_model_keys = {make: sorted(k for k, e in idx.items()
                                     if len(k) >= 4 and not e.weak and not e.blocked and not k.isdigit()
                                     and re.search("[a-z]{3}", k))
                        for make, idx in model_index.items()}
    fuzzy_make_keys = sorted(k for k in make_keys if len(k) >= 4)
    key_prefixes = {make: frozenset(k[:i] for k in idx for i in range(1, len(k) + 1))
                    for make, idx in model_index.items()}
    key_prefixes[""] = frozenset(k[:i] for k in global_index for i in range(1, len(k) + 1))
    make_prefixes = frozenset(k[:i] for k in make_keys for i in range(1, len(k) + 1))
    return Catalogue(classes, makes, {k: tuple(v) for k, v in make_keys.items()}, model_index, patterns,
                     global_index, fuzzy_model_keys, fuzzy_make_keys, max_ngram, key_prefixes, make_prefixes)


def _target_name(families: dict, make: str, model: str) -> str:
    spec = families.get(make, {}).get(model, {})
    if "target" in spec:
        tm, tmod = spec["target"].split("|", 1)
        return _class_name(tm, tmod)
    return _class_name(make, model)


@functools.lru_cache(maxsize=1)
def load() -> Catalogue:
    """The catalogue built from the shipped data files (built once per process)."""
    return build()


def class_names() -> list[str]:
    """Every class name of the catalogue, sorted."""
    return load().class_names()
