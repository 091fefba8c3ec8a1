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
from dataclasses import dataclass, field
from pathlib import Path

from autodetect.catalogue.tokens import YEAR, key_of, tokenize

__all__ = ["DATA_DIR", "CarClass", "Catalogue", "Entry", "build", "class_names", "key_of", "load", "tokenize"]

DATA_DIR = Path(__file__).resolve().parent / "data"


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


#: make -> key -> the classes that name may mean (collected while classes are made, indexed at the end)
_Aliases = dict[str, dict[str, set[str]]]
_MakeKeys = dict[str, tuple[tuple[str, tuple[str, ...]], ...]]


def _class_name(make: str, model: str) -> str:
    return f"{make} {model}"


def _load_vpic(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        lines = [ln for ln in f if not ln.startswith("#")]
    return list(csv.DictReader(lines))


def build(data_dir: Path = DATA_DIR) -> Catalogue:
    """The catalogue from the data files: classes and their names first, then the lookup indexes."""
    cur = json.loads((data_dir / "curated.json").read_text(encoding="utf-8"))
    rows = _load_vpic(data_dir / "vpic_models.csv")
    families: dict[str, dict[str, dict]] = cur.get("families", {})
    weak_keys = {key_of(w) for w in cur.get("weak_aliases", [])}
    not_global = {key_of(w) for w in cur.get("not_global", [])}

    classes: dict[str, CarClass] = {}
    aliases: _Aliases = {}
    _add_vpic_classes(rows, families, classes, aliases)
    _add_curated_classes(cur.get("extra_models", {}), classes, aliases)
    _add_family_classes(families, classes, aliases)
    _add_klasse_aliases(classes, aliases)
    makes = tuple(sorted({c.make for c in classes.values()} | set(cur.get("makes", {}))))

    model_index = _model_index(aliases, weak_keys)
    _add_ambiguous_aliases(model_index, cur.get("ambiguous", {}), classes, families, weak_keys)
    for make, keys in cur.get("blocked", {}).items():
        for k in keys:
            model_index.setdefault(make, {})[key_of(k)] = Entry(frozenset(), blocked=True)
    patterns = _patterns(makes, families, cur.get("base_patterns", {}))
    make_keys = _make_keys(makes, cur)
    max_ngram = max(len(tokenize(a)) for a in list(makes) + [a for v in cur.get("makes", {}).values() for a in v])
    global_index = _global_index(model_index, not_global)

    key_prefixes = {make: _prefixes(idx) for make, idx in model_index.items()}
    key_prefixes[""] = _prefixes(global_index)
    return Catalogue(classes, makes, make_keys, model_index, patterns, global_index,
                     _fuzzy_model_keys(model_index), sorted(k for k in make_keys if len(k) >= 4), max_ngram,
                     key_prefixes, _prefixes(make_keys))


def _add_alias(aliases: _Aliases, make: str, text: str, cls: str) -> None:
    k = key_of(text)
    if k:
        aliases.setdefault(make, {}).setdefault(k, set()).add(cls)


def _family_target(make: str, fam_model: str, spec: dict) -> tuple[str, str]:
    """The (make, model) a family's class has: its own, or a "target" of another make ("Dodge Ram" -> Ram)."""
    if "target" in spec:
        tm, tmod = spec["target"].split("|", 1)
        return tm, tmod
    return make, fam_model


def _target_name(families: dict, make: str, model: str) -> str:
    return _class_name(*_family_target(make, model, families.get(make, {}).get(model, {})))


def _absorbers(families: dict[str, dict[str, dict]]) -> dict[str, list[tuple[re.Pattern, str, str]]]:
    """Per make, the families that absorb vPIC models: (pattern over the vPIC model, target make, model)."""
    absorbers: dict[str, list[tuple[re.Pattern, str, str]]] = {}
    for make, fams in families.items():
        for fam_model, spec in fams.items():
            if "absorb" in spec:
                tm, tmod = _family_target(make, fam_model, spec)
                absorbers.setdefault(make, []).append((re.compile(spec["absorb"], re.I), tm, tmod))
    return absorbers


def _add_vpic_classes(rows: list[dict], families: dict[str, dict[str, dict]], classes: dict[str, CarClass],
                      aliases: _Aliases) -> None:
    """Step 1: vPIC models, merged into families where a family absorbs them."""
    absorbers = _absorbers(families)
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
        _add_alias(aliases, make, model, name)
        _add_alias(aliases, make, r["vpic_model"], name)
        if target[0] != make:  # cross-make family: the target make knows the name too
            _add_alias(aliases, target[0], target[1], name)
    for name, m in merged.items():
        source = "vpic" if m["direct"] else "family"
        classes[name] = CarClass(name, m["make"], m["model"], source, tuple(m["vpic"]),
                                 m["ymin"] if m["ymin"] < 9999 else None, m["ymax"] or None,
                                 max(m["kinds"], key=m["kinds"].get))


def _add_curated_classes(extra_models: dict[str, list[str]], classes: dict[str, CarClass],
                         aliases: _Aliases) -> None:
    """Step 2: curated (non-vPIC) models."""
    for make, models in extra_models.items():
        for model in models:
            name = _class_name(make, model)
            if name not in classes:
                classes[name] = CarClass(name, make, model, "curated")
            _add_alias(aliases, make, model, name)


def _add_family_classes(families: dict[str, dict[str, dict]], classes: dict[str, CarClass],
                        aliases: _Aliases) -> None:
    """Step 3: the family classes that vPIC did not already give, then every family's aliases."""
    for make, fams in families.items():
        for fam_model, spec in fams.items():
            tm, tmod = _family_target(make, fam_model, spec)
            name = _class_name(tm, tmod)
            if name not in classes:
                classes[name] = CarClass(name, tm, tmod, "family")
            _add_alias(aliases, make, fam_model, name)
            for a in spec.get("aliases", ()):
                _add_alias(aliases, make, a, name)


def _add_klasse_aliases(classes: dict[str, CarClass], aliases: _Aliases) -> None:
    """Step 4, automatic aliases: Mercedes "X-Class" is also "X-Klasse" and "X Class"."""
    for c in list(classes.values()):
        m = re.fullmatch(r"([A-Z]+)-Class(.*)", c.model)
        if m:
            _add_alias(aliases, c.make, f"{m.group(1)}-Klasse{m.group(2)}", c.name)
            _add_alias(aliases, c.make, f"{m.group(1)} Class{m.group(2)}", c.name)


def _model_index(aliases: _Aliases, weak_keys: set[str]) -> dict[str, dict[str, Entry]]:
    """Step 5, the per-make index: key -> Entry (collisions within a make become ambiguous)."""
    model_index: dict[str, dict[str, Entry]] = {}
    for make, keys in aliases.items():
        idx = model_index.setdefault(make, {})
        for k, cls in keys.items():
            weak = k in weak_keys or (k.isdigit() and (len(k) <= 2 or bool(YEAR.fullmatch(k))))
            idx[k] = Entry(frozenset(cls), None, weak)
    return model_index


def _add_ambiguous_aliases(model_index: dict[str, dict[str, Entry]], ambiguous: dict[str, dict[str, dict]],
                           classes: dict[str, CarClass], families: dict, weak_keys: set[str]) -> None:
    """Curated aliases that may mean several classes ("Silverado"), with the default to pick."""
    def class_of(make: str, model: str) -> str:
        return _class_name(make, model) if _class_name(make, model) in classes else _target_name(families, make, model)

    for make, amb in ambiguous.items():
        idx = model_index.setdefault(make, {})
        for alias, spec in amb.items():
            targets = frozenset(class_of(make, m) for m in spec["models"])
            missing = [t for t in targets if t not in classes]
            if missing:
                raise ValueError(f"curated ambiguous alias {make}/{alias} names unknown classes {missing}")
            default = spec.get("default")
            default = class_of(make, default) if default else None
            idx[key_of(alias)] = Entry(targets, default, key_of(alias) in weak_keys,
                                       frozenset(key_of(w) for w in spec.get("not_with", ())))


def _patterns(makes: tuple[str, ...], families: dict[str, dict[str, dict]], base_specs: dict[str, list[str]]
              ) -> dict[str, tuple[re.Pattern, tuple[tuple[str, str | None], ...]]]:
    """Step 6, model codes: one alternation per make; group i -> (target class or "base:<group>")."""
    patterns: dict[str, tuple[re.Pattern, tuple[tuple[str, str | None], ...]]] = {}
    for make in makes:
        alts: list[str] = []
        targets: list[tuple[str, str | None]] = []
        for fam_model, spec in families.get(make, {}).items():
            tm, tmod = _family_target(make, fam_model, spec)
            for p in spec.get("patterns", ()):
                alts.append(f"(?P<p{len(targets)}>{p})")
                targets.append((_class_name(tm, tmod), p))
        for p in base_specs.get(make, ()):
            inner = p.replace("(?P<base>", f"(?P<b{len(targets)}>")
            alts.append(f"(?P<p{len(targets)}>{inner})")
            targets.append((f"base:b{len(targets)}", p))
        if alts:
            patterns[make] = (re.compile("|".join(alts)), tuple(targets))
    return patterns


def _make_keys(makes: tuple[str, ...], cur: dict) -> _MakeKeys:
    """Step 7: make names and aliases -> (make, model-prefix tokens) ("Range Rover" -> Land Rover, "range rover")."""
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
    return {k: tuple(v) for k, v in make_keys.items()}


def _global_index(model_index: dict[str, dict[str, Entry]], not_global: set[str]) -> dict[str, frozenset[str]]:
    """Step 8: distinctive model names alone identify the make ("Camry", "F-150", "Silverado 1500")."""
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
    return {k: frozenset(v) for k, v in glob.items() if v}


def _fuzzy_model_keys(model_index: dict[str, dict[str, Entry]]) -> dict[str, list[str]]:
    """Per make, the model keys a misspelling may be matched to (no weak, blocked or number-only keys)."""
    return {make: sorted(k for k, e in idx.items()
                         if len(k) >= 4 and not e.weak and not e.blocked and not k.isdigit()
                         and re.search("[a-z]{3}", k))
            for make, idx in model_index.items()}


def _prefixes(keys) -> frozenset[str]:
    """Every string prefix of every key: a token that is not one cannot start a name."""
    return frozenset(k[:i] for k in keys for i in range(1, len(k) + 1))


@functools.lru_cache(maxsize=1)
def load() -> Catalogue:
    """The catalogue built from the shipped data files (built once per process)."""
    return build()


def class_names() -> list[str]:
    """Every class name of the catalogue, sorted."""
    return load().class_names()
