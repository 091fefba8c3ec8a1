"""The car models of the sandbox marketplace.

Each :class:`CarSpec` carries a real make and model name, the synthetic look the renderer draws
(body proportions in :class:`Shape`, salient details in :class:`Look`), and how sellers write it
(:class:`Names`: aliases, trims, engine strings, model codes, common misspellings). The name data is
explicit so that a name normalizer can be tested against it.

Details are assigned per model, never per make: no detail value is shared by all models of one make
and by no other make, so a classifier cannot learn the make from one detail alone.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

# --- the look -----------------------------------------------------------------------------------

BODIES = ("sedan", "coupe", "roadster", "hatchback", "wagon", "suv", "pickup", "van")
GRILLES = ("wide", "hexagon", "kidney", "bar", "trapezoid", "oval", "slots", "mesh", "split", "none")
HEADLIGHTS = ("round", "twin", "rect", "slit", "swept", "l_shape", "c_shape", "split")
TAILLIGHTS = ("bar", "rect", "round", "vertical", "l_shape", "c_shape", "triangle", "slim")
BADGES = ("circle", "oval", "shield", "diamond", "bowtie", "rings", "star", "wings")
TRIMS = ("none", "chrome", "black", "cladding", "stripe", "twotone")
SPOILERS = ("none", "lip", "wing", "roof")
ROOFS = ("plain", "rack", "black", "sunroof", "softtop", "glass")
WHEELS = ("spokes5", "spokes6", "multi", "dish", "twin", "steel")
DETAIL_COLOURS = ("black", "chrome", "grey", "body", "silver", "blue", "red", "gold", "white", "bronze", "gunmetal")
EXTRAS = ("hood_scoop", "hood_stripes", "spare_wheel", "fender_flares", "running_boards", "fog_lights",
          "quad_exhaust", "side_vents", "sliding_door", "bull_bar", "tow_hook", "roof_light", "panel_van")


@dataclass(frozen=True)
class Shape:
    """Body proportions in metres. ``x`` runs from the rear bumper (0) to the front bumper (``length``),
    ``z`` up from the ground. The side profile is built from these numbers and extruded across ``width``."""

    body: str
    length: float
    width: float
    height: float  # roof peak
    ride: float  # underside above the ground
    wheel: float  # wheel radius
    rear_axle: float  # axle positions, fractions of the length from the rear
    front_axle: float
    nose: float  # height of the bonnet's leading edge
    belt: float  # window line
    hood: float  # bonnet length, nose to windscreen base
    screen: float  # windscreen run (horizontal)
    rear_glass: float  # rear window (pickup: cab back) run
    deck: float  # boot lid or pickup bed length; 0 for hatchbacks, SUVs, vans
    tail: float  # height of the rear top edge
    tumble: float = 0.14  # how far the glasshouse leans in, as a fraction of the half width
    roof_arc: float = 0.0  # roof bulge in metres (round roofs)
    roof_slope: float = 0.0  # how much lower the roof ends at the back than it starts at the front

    def __post_init__(self) -> None:
        if self.body not in BODIES:
            raise ValueError(f"unknown body {self.body!r}")
        if self.length - self.hood - self.screen <= self.deck + self.rear_glass + 0.3:
            raise ValueError("no room for a roof: hood + screen + rear_glass + deck too long")


_BODY_PRESETS: dict[str, dict[str, float]] = {
    "sedan": dict(length=4.70, width=1.82, height=1.45, ride=0.15, wheel=0.33, rear_axle=0.21,
                  front_axle=0.80, nose=0.74, belt=0.98, hood=1.30, screen=0.75, rear_glass=0.70,
                  deck=0.55, tail=0.96),
    "coupe": dict(length=4.50, width=1.84, height=1.33, ride=0.13, wheel=0.33, rear_axle=0.20,
                  front_axle=0.81, nose=0.66, belt=0.92, hood=1.40, screen=0.85, rear_glass=1.05,
                  deck=0.35, tail=0.90),
    "roadster": dict(length=3.95, width=1.74, height=1.23, ride=0.12, wheel=0.30, rear_axle=0.19,
                     front_axle=0.79, nose=0.62, belt=0.85, hood=1.35, screen=0.50, rear_glass=0.45,
                     deck=0.55, tail=0.82),
    "hatchback": dict(length=4.25, width=1.79, height=1.47, ride=0.15, wheel=0.32, rear_axle=0.17,
                      front_axle=0.80, nose=0.74, belt=0.98, hood=1.05, screen=0.75, rear_glass=0.28,
                      deck=0.0, tail=1.02),
    "wagon": dict(length=4.85, width=1.85, height=1.62, ride=0.21, wheel=0.35, rear_axle=0.19,
                  front_axle=0.80, nose=0.82, belt=1.06, hood=1.20, screen=0.80, rear_glass=0.28,
                  deck=0.0, tail=1.10),
    "suv": dict(length=4.80, width=1.93, height=1.76, ride=0.24, wheel=0.38, rear_axle=0.18,
                front_axle=0.79, nose=0.98, belt=1.18, hood=1.25, screen=0.65, rear_glass=0.22,
                deck=0.0, tail=1.22),
    "pickup": dict(length=5.85, width=2.02, height=1.96, ride=0.28, wheel=0.41, rear_axle=0.17,
                   front_axle=0.80, nose=1.15, belt=1.32, hood=1.60, screen=0.60, rear_glass=0.06,
                   deck=2.00, tail=1.32),
    "van": dict(length=5.15, width=2.00, height=1.78, ride=0.17, wheel=0.36, rear_axle=0.17,
                front_axle=0.83, nose=0.95, belt=1.10, hood=0.85, screen=0.95, rear_glass=0.20,
                deck=0.0, tail=1.15),
}


def shape(body: str, **overrides: float) -> Shape:
    """A body preset with per-model proportions overridden."""
    return Shape(body=body, **{**_BODY_PRESETS[body], **overrides})


@dataclass(frozen=True)
class Look:
    """Salient details the renderer draws. Colours name :data:`DETAIL_COLOURS`; "body" means the car's
    own paint. The body colour itself is not part of the look: it is drawn per listing."""

    grille: str
    grille_colour: str
    headlight: str
    taillight: str
    badge: str
    badge_colour: str
    windows: int  # side windows per side
    trim: str = "none"
    spoiler: str = "none"
    roof: str = "plain"
    wheel: str = "spokes5"
    rim: str = "silver"
    extras: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for value, allowed in ((self.grille, GRILLES), (self.headlight, HEADLIGHTS), (self.taillight, TAILLIGHTS),
                               (self.badge, BADGES), (self.trim, TRIMS), (self.spoiler, SPOILERS),
                               (self.roof, ROOFS), (self.wheel, WHEELS), (self.grille_colour, DETAIL_COLOURS),
                               (self.badge_colour, DETAIL_COLOURS), (self.rim, DETAIL_COLOURS)):
            if value not in allowed:
                raise ValueError(f"{value!r} is not one of {allowed}")
        if self.windows not in (1, 2, 3) or not self.extras <= set(EXTRAS):
            raise ValueError(f"bad windows {self.windows} or extras {set(self.extras) - set(EXTRAS)}")

    def features(self) -> dict[str, object]:
        """The categorical details, one entry per kind (extras as a sorted tuple)."""
        return {"grille": (self.grille, self.grille_colour), "headlight": self.headlight,
                "taillight": self.taillight, "badge": (self.badge, self.badge_colour),
                "windows": self.windows, "trim": self.trim, "spoiler": self.spoiler, "roof": self.roof,
                "wheel": (self.wheel, self.rim), "extras": tuple(sorted(self.extras))}


def look(grille: str, headlight: str, taillight: str, badge: str, windows: int, *extras: str,
         **details: str) -> Look:
    """Compact :class:`Look` constructor: ``grille``/``badge`` are "shape:colour"; ``extras`` are flags."""
    grille_shape, grille_colour = grille.split(":")
    badge_shape, badge_colour = badge.split(":")
    return Look(grille=grille_shape, grille_colour=grille_colour, headlight=headlight, taillight=taillight,
                badge=badge_shape, badge_colour=badge_colour, windows=windows, extras=frozenset(extras),
                **details)


# --- the names ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Names:
    """How sellers write a model. ``codes`` stand for the model on their own ("328i" is a 3 Series);
    ``extras`` are drivetrain, package and generation words ("Quattro", "Z71", "MK7"); ``bodies`` are
    body styles ("Coupe", "SuperCrew")."""

    aliases: tuple[str, ...] = ()
    trims: tuple[str, ...] = ()
    engines: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    bodies: tuple[str, ...] = ()
    misspellings: tuple[str, ...] = ()


#: Other names sellers use for a make (the Make aspect and titles).
MAKE_ALIASES: dict[str, tuple[str, ...]] = {
    "Volkswagen": ("VW",),
    "Chevrolet": ("Chevy",),
    "Mercedes-Benz": ("Mercedes", "Mercedes Benz", "Benz", "MB"),
    "Mini": ("MINI",),
    "Ram": ("RAM", "Dodge Ram"),
}
#: Misspellings of makes seen in titles.
MAKE_MISSPELLINGS: dict[str, tuple[str, ...]] = {
    "Volkswagen": ("Volkswagon", "Volkswagan"),
    "Chevrolet": ("Chevorlet", "Chevrolete"),
    "Mercedes-Benz": ("Mercedez Benz", "Mercedes-Bens"),
    "Porsche": ("Porche",),
    "Hyundai": ("Hyundia", "Hundai"),
    "Subaru": ("Subaro",),
    "Nissan": ("Nisan",),
    "Toyota": ("Toyta",),
    "Chrysler": ("Chrystler",),
}


@dataclass(frozen=True)
class CarSpec:
    make: str
    model: str
    shape: Shape
    look: Look
    names: Names = field(default_factory=Names)
    years: tuple[int, int] = (2000, 2024)  # model years sold in the US
    price: int = 30000  # typical asking price of a one-year-old car, USD

    @property
    def class_name(self) -> str:
        """The canonical label: "Audi TT"."""
        return f"{self.make} {self.model}"


def _car(make: str, model: str, body: Shape, details: Look, years: tuple[int, int], price: int,
         **names: tuple[str, ...]) -> CarSpec:
    return CarSpec(make, model, body, details, Names(**names), years, price)


# The first ten are the marketplace's default models: mixed bodies, two makes with two models each,
# and the makes with aliases (VW, Chevy, Mercedes).
CARS: tuple[CarSpec, ...] = (
    _car("Audi", "TT", shape("coupe", length=4.18, height=1.35, hood=1.30, screen=0.80, rear_glass=1.25,
                             deck=0.20, tail=0.88, roof_arc=0.05, wheel=0.33),
         look("hexagon:black", "swept", "slim", "rings:silver", 1, "quad_exhaust",
              roof="black", wheel="spokes5", rim="silver"),
         (1999, 2023), 45000, aliases=("TT Coupe", "TTS"), trims=("Premium", "Premium Plus", "Prestige", "S line"),
         engines=("2.0T", "1.8T", "3.2 V6", "TDI"), extras=("Quattro", "TTS", "MK2", "8J"), bodies=("Coupe", "Roadster"),
         misspellings=("T.T.",)),
    _car("BMW", "3 Series", shape("sedan", length=4.71, height=1.43, hood=1.48, screen=0.68, rear_glass=0.55, deck=0.55,
                                  nose=0.70, tail=0.98),
         look("kidney:chrome", "l_shape", "l_shape", "circle:blue", 3, "fog_lights",
              trim="chrome", roof="sunroof", wheel="twin", rim="silver"),
         (1990, 2024), 45000, aliases=("3-Series", "3series", "3 Serie"),
         trims=("Sport Line", "M Sport", "Luxury Line"), engines=("2.0L Turbo", "3.0L I6", "N55", "B58"),
         codes=("320i", "328i", "330i", "335i", "340i", "M340i", "328d", "330e"),
         extras=("xDrive", "E90", "F30", "G20"), bodies=("Sedan",), misspellings=("3 Seires",)),
    _car("Ford", "F-150", shape("pickup", length=5.90, height=1.97, nose=1.18, belt=1.33, hood=1.65,
                                deck=1.95, tail=1.34),
         look("mesh:chrome", "c_shape", "vertical", "oval:blue", 2, "running_boards", "tow_hook",
              trim="none", wheel="spokes6", rim="silver"),
         (1990, 2024), 48000, aliases=("F150", "F 150", "F-150 Pickup"),
         trims=("XL", "XLT", "Lariat", "King Ranch", "Platinum", "Raptor", "STX"),
         engines=("5.0L V8", "3.5L EcoBoost", "2.7L EcoBoost", "5.4 Triton"),
         extras=("4X4", "4WD", "FX4"), bodies=("SuperCrew", "SuperCab", "Crew Cab", "Short Bed"),
         misspellings=("F-15O", "F159")),
    _car("Volkswagen", "Golf", shape("hatchback", length=4.26, height=1.46, hood=1.02, rear_glass=0.32),
         look("bar:black", "rect", "rect", "circle:silver", 2, trim="black", spoiler="roof",
              wheel="dish", rim="gunmetal"),
         (1990, 2021), 26000, aliases=("Golf GTI", "Golf R"),
         trims=("GTI", "R", "TSI", "SE", "S", "SEL", "Sportwagen", "Autobahn"),
         engines=("2.0T", "1.8T", "TDI", "2.5L"), extras=("MK5", "MK6", "MK7", "MK7.5"), bodies=("4-Door", "Hatchback"),
         misspellings=("Gulf",)),
    _car("Chevrolet", "Silverado 1500", shape("pickup", length=5.88, height=1.92, nose=1.22, belt=1.30,
                                              hood=1.72, screen=0.55, deck=1.98, tail=1.30, wheel=0.40),
         look("split:chrome", "rect", "rect", "bowtie:gold", 1, "fog_lights", "fender_flares",
              trim="black", wheel="multi", rim="black"),
         (1999, 2024), 47000, aliases=("Silverado", "Silverado-1500", "1500"),
         trims=("LT", "LTZ", "LS", "WT", "RST", "High Country", "Custom"),
         engines=("5.3L V8", "6.2L V8", "2.7L Turbo", "4.8 V8"),
         extras=("Z71", "4x4", "4WD", "Trail Boss"), bodies=("Crew Cab", "Double Cab"),
         misspellings=("Silverdo", "Silverado1500")),
    _car("Mercedes-Benz", "C-Class", shape("sedan", length=4.69, height=1.45, hood=1.50, screen=0.82, rear_glass=0.85,
                                           deck=0.36, nose=0.68, tail=0.94, roof_arc=0.06, roof_slope=0.04),
         look("wide:grey", "swept", "triangle", "star:silver", 2, trim="chrome", roof="glass",
              wheel="spokes5", rim="gunmetal"),
         (1994, 2024), 46000, aliases=("C Class", "C-Klasse"), trims=("Sport", "Luxury", "AMG Line"),
         engines=("2.0L Turbo", "3.0L V6", "3.5L V6"), codes=("C250", "C300", "C350", "C43 AMG", "C63 AMG"),
         extras=("4MATIC", "W204", "W205"), bodies=("Sedan",), misspellings=("C-Clas",)),
    _car("Toyota", "Camry", shape("sedan", length=4.88, height=1.45, hood=1.30, screen=0.98, rear_glass=0.88,
                                  deck=0.52, nose=0.70, tail=0.98, roof_slope=0.03),
         look("trapezoid:black", "split", "c_shape", "oval:silver", 3, "fog_lights",
              trim="none", spoiler="lip", roof="black", wheel="multi", rim="silver"),
         (1992, 2024), 28000, trims=("LE", "SE", "XLE", "XSE", "TRD", "Hybrid LE"),
         engines=("2.5L", "3.5L V6", "2.4L"), extras=("Hybrid",), bodies=("Sedan",), misspellings=("Camery", "Camy")),
    _car("Jeep", "Wrangler", shape("suv", length=4.33, width=1.88, height=1.87, ride=0.27, wheel=0.41,
                                   rear_axle=0.15, front_axle=0.77, nose=1.12, belt=1.25, hood=1.30,
                                   screen=0.18, rear_glass=0.06, tail=1.28, tumble=0.03),
         look("slots:body", "round", "rect", "shield:black", 2, "spare_wheel", "fender_flares", "tow_hook",
              roof="softtop", wheel="steel", rim="black"),
         (1997, 2024), 38000, aliases=("Wrangler Unlimited", "Wrangler JK", "Wrangler JL"),
         trims=("Sport", "Sahara", "Rubicon", "Willys", "Unlimited", "X"),
         engines=("3.6L V6", "4.0L I6", "3.8L V6"), extras=("4x4", "4WD", "JK", "JL", "TJ"), bodies=("Hardtop", "Soft Top"),
         misspellings=("Wrangeler", "Wrangel")),
    _car("Audi", "A4", shape("sedan", length=4.76, height=1.43, hood=1.32, screen=0.68, rear_glass=0.60,
                             deck=0.66, nose=0.76, tail=1.00, tumble=0.18),
         look("hexagon:chrome", "l_shape", "bar", "diamond:silver", 3, trim="black",
              roof="rack", wheel="spokes5", rim="silver"),
         (1996, 2024), 42000, aliases=("A4 Sedan", "A-4"), trims=("Premium", "Premium Plus", "Prestige", "S line"),
         engines=("2.0T", "1.8T", "3.2"), extras=("Quattro", "B8", "B9"), bodies=("Sedan", "Avant"),
         misspellings=("A 4",)),
    _car("BMW", "X5", shape("suv", length=4.92, width=2.00, height=1.75, hood=1.35, screen=0.70,
                            rear_glass=0.30, nose=0.98, belt=1.16, tail=1.20, ride=0.22),
         look("kidney:black", "twin", "l_shape", "shield:blue", 3, "running_boards",
              trim="cladding", roof="rack", spoiler="roof", wheel="multi", rim="gunmetal"),
         (2000, 2024), 62000, aliases=("X-5",), trims=("M Sport", "Luxury"),
         engines=("3.0L I6", "4.4L V8", "N55", "B58"), codes=("X5 xDrive35i", "X5 xDrive40i", "xDrive50i", "X5 M", "X5 35d"),
         extras=("xDrive", "AWD", "E70", "F15", "G05"), misspellings=("X 5",)),
    _car("Ford", "Mustang", shape("coupe", length=4.79, height=1.38, nose=0.72, hood=1.70, screen=0.80,
                                  rear_glass=1.10, deck=0.40, tail=0.96),
         look("trapezoid:black", "slit", "vertical", "wings:silver", 1, "hood_scoop", "hood_stripes",
              spoiler="lip", wheel="spokes5", rim="black"),
         (1994, 2024), 35000, aliases=("Mustang GT", "Stang"),
         trims=("GT", "EcoBoost", "V6", "Premium", "Shelby GT350", "Mach 1", "Bullitt"),
         engines=("5.0L V8", "2.3L EcoBoost", "3.7L V6", "4.6L V8"),
         extras=("S550", "S197"), bodies=("Coupe", "Convertible", "Fastback"), misspellings=("Mustange", "Mustag")),
    _car("Tesla", "Model 3", shape("sedan", length=4.69, height=1.44, nose=0.66, belt=0.96, hood=1.05,
                                   screen=1.10, rear_glass=1.05, deck=0.35, tail=0.94, roof_arc=0.04),
         look("none:black", "swept", "l_shape", "diamond:red", 2, roof="glass", trim="none",
              wheel="dish", rim="silver"),
         (2017, 2024), 42000, aliases=("Model3", "Model-3", "M3"),
         trims=("Long Range", "Performance", "Standard Range Plus", "Mid Range"),
         engines=("Dual Motor", "Electric"), extras=("AWD", "RWD", "EV", "FSD"), misspellings=("Modle 3",)),
    _car("Porsche", "911", shape("coupe", length=4.52, height=1.30, nose=0.62, belt=0.86, hood=1.20,
                                 screen=0.85, rear_glass=1.45, deck=0.20, tail=0.86, roof_arc=0.10,
                                 rear_axle=0.16, front_axle=0.72),
         look("none:grey", "round", "bar", "shield:gold", 1, "quad_exhaust",
              spoiler="wing", wheel="twin", rim="gold"),
         (1990, 2024), 110000, aliases=("911 Carrera", "Carrera"),
         trims=("Carrera", "Carrera S", "Carrera 4S", "Turbo", "Turbo S", "GT3", "Targa"),
         engines=("3.0L Flat-6", "3.8L", "3.6L"), extras=("997", "991", "992", "PDK"), bodies=("Coupe", "Cabriolet"),
         misspellings=("911S",)),
    _car("Toyota", "Corolla", shape("sedan", length=4.55, height=1.48, hood=1.15, screen=0.80, rear_glass=0.72,
                                    deck=0.50, nose=0.78, wheel=0.30, tail=0.99, ride=0.16),
         look("bar:chrome", "swept", "rect", "oval:silver", 2, trim="black", wheel="spokes6", rim="white"),
         (1993, 2024), 22000, trims=("LE", "S", "SE", "XSE", "L", "CE"),
         engines=("1.8L", "2.0L"), extras=("iM",), bodies=("Sedan", "Hatchback"), misspellings=("Corola", "Carolla")),
    _car("Honda", "Civic", shape("sedan", length=4.65, height=1.40, hood=1.25, screen=0.95, rear_glass=1.18,
                                 deck=0.22, nose=0.70, tail=0.96, roof_slope=0.05),
         look("split:black", "c_shape", "c_shape", "oval:chrome", 2, spoiler="lip", wheel="twin", rim="black"),
         (1992, 2024), 25000, aliases=("Civic Si", "Civic Type R"), trims=("LX", "EX", "EX-L", "Sport", "Si", "Touring"),
         engines=("1.5T", "2.0L", "1.8L"), extras=("FK8",), bodies=("Sedan", "Coupe", "Hatchback"), misspellings=("Civc",)),
    _car("Honda", "Accord", shape("sedan", length=4.90, height=1.45, hood=1.34, screen=0.90, rear_glass=1.00,
                                  deck=0.40, nose=0.74, tail=0.97, roof_arc=0.03),
         look("wide:chrome", "slit", "c_shape", "shield:chrome", 3, trim="chrome", roof="plain",
              wheel="multi", rim="black"),
         (1990, 2024), 29000, trims=("LX", "EX", "EX-L", "Sport", "Touring", "Hybrid"),
         engines=("1.5T", "2.0T", "2.4L", "3.5L V6"), bodies=("Sedan", "Coupe"), misspellings=("Acord", "Accrod")),
    _car("Chevrolet", "Camaro", shape("coupe", length=4.78, height=1.35, nose=0.74, belt=1.00, hood=1.75,
                                      screen=0.70, rear_glass=0.95, deck=0.45, tail=1.00),
         look("wide:black", "rect", "rect", "bowtie:gold", 1, spoiler="wing", trim="stripe",
              wheel="spokes5", rim="gunmetal"),
         (1993, 2024), 33000, trims=("LT", "SS", "1LT", "2SS", "ZL1", "RS"),
         engines=("6.2L V8", "3.6L V6", "2.0T"), bodies=("Coupe", "Convertible"), misspellings=("Camero", "Camaroo")),
    _car("Volkswagen", "Jetta", shape("sedan", length=4.70, height=1.47, hood=1.18, screen=0.76, rear_glass=0.62,
                                      deck=0.66, nose=0.74, tail=1.02),
         look("wide:chrome", "rect", "l_shape", "circle:blue", 3, trim="stripe", wheel="spokes6", rim="silver"),
         (1993, 2024), 23000, aliases=("Jetta GLI", "Jetta Sportwagen"), trims=("S", "SE", "SEL", "GLI", "Wolfsburg"),
         engines=("1.4T", "2.0T", "TDI", "2.5L"), extras=("MK6", "MK7"), bodies=("Sedan",), misspellings=("Jeta",)),
    _car("Nissan", "Altima", shape("sedan", length=4.90, height=1.42, hood=1.50, screen=0.85, rear_glass=0.80,
                                   deck=0.48, nose=0.80, ride=0.17, tail=0.95, roof_arc=0.05),
         look("oval:chrome", "swept", "c_shape", "circle:silver", 2, trim="twotone", wheel="spokes6", rim="gunmetal"),
         (1993, 2024), 26000, trims=("S", "SV", "SL", "SR", "Platinum"), engines=("2.5L", "3.5L V6", "2.0T"),
         bodies=("Sedan", "Coupe"), misspellings=("Altma", "Altimia")),
    _car("Subaru", "Outback", shape("wagon", length=4.86, height=1.68, ride=0.22),
         look("hexagon:grey", "c_shape", "c_shape", "oval:blue", 3, "fog_lights",
              trim="cladding", roof="rack", spoiler="roof", wheel="spokes5", rim="silver"),
         (1995, 2024), 32000, trims=("Premium", "Limited", "Touring", "Onyx XT", "Wilderness"),
         engines=("2.5i", "3.6R", "2.4T"), extras=("AWD",), bodies=("Wagon",), misspellings=("Out back", "Outbak")),
    _car("Mazda", "MX-5 Miata", shape("roadster", length=3.92, height=1.23, hood=1.45),
         look("oval:black", "slit", "round", "wings:silver", 1, roof="softtop", wheel="spokes6", rim="silver"),
         (1990, 2024), 30000, aliases=("Miata", "MX-5", "MX5", "MX-5 Miata RF"),
         trims=("Sport", "Club", "Grand Touring", "RF"), engines=("2.0L", "1.8L", "1.6L"),
         extras=("NA", "NB", "NC", "ND"), bodies=("Convertible", "Roadster"), misspellings=("Maita", "Miatta")),
    _car("Dodge", "Charger", shape("sedan", length=5.04, height=1.48, hood=1.60, screen=0.78, rear_glass=0.80,
                                   deck=0.60, nose=0.82, tail=1.02, belt=1.02),
         look("split:black", "rect", "bar", "star:red", 2, "hood_scoop", "quad_exhaust",
              spoiler="lip", wheel="spokes5", rim="black"),
         (2006, 2023), 36000, trims=("SXT", "R/T", "Scat Pack", "SRT Hellcat", "GT", "Daytona"),
         engines=("5.7L HEMI", "6.4L HEMI", "3.6L V6"), extras=("AWD", "RWD"), bodies=("Sedan",), misspellings=("Charjer",)),
    _car("Ram", "1500", shape("pickup", length=5.92, height=2.00, nose=1.30, belt=1.38, hood=1.70, screen=0.66,
                              deck=1.65, tail=1.38, rear_glass=0.10),
         look("wide:chrome", "l_shape", "c_shape", "rings:silver", 2, "running_boards", "tow_hook",
              trim="twotone", wheel="spokes6", rim="silver"),
         (2011, 2024), 45000, aliases=("Ram 1500", "1500 Pickup"),
         trims=("Tradesman", "Big Horn", "Laramie", "Rebel", "Limited", "Longhorn", "TRX"),
         engines=("5.7L HEMI", "3.6L V6", "EcoDiesel"), extras=("4x4", "4WD"), bodies=("Crew Cab", "Quad Cab"),
         misspellings=("Ram1500",)),
    _car("Toyota", "RAV4", shape("suv", length=4.60, width=1.86, height=1.70, hood=1.10, screen=0.72,
                                 rear_glass=0.38, nose=0.95, tail=1.15, tumble=0.10, wheel=0.37),
         look("trapezoid:grey", "l_shape", "rect", "circle:silver", 3, "fender_flares",
              trim="cladding", roof="black", spoiler="roof", wheel="spokes5", rim="black"),
         (1996, 2024), 31000, aliases=("Rav 4", "RAV-4", "Rav4 Hybrid"), trims=("LE", "XLE", "XLE Premium", "Adventure",
                                                                               "Limited", "TRD Off-Road"),
         engines=("2.5L", "2.5L Hybrid"), extras=("AWD", "FWD", "Hybrid"), misspellings=("Rav5",)),
    _car("Honda", "CR-V", shape("suv", length=4.64, width=1.86, height=1.68, hood=1.05, screen=0.85,
                                rear_glass=0.45, nose=0.92, tail=1.12, belt=1.12, roof_slope=0.05),
         look("wide:black", "c_shape", "vertical", "oval:chrome", 3, trim="chrome", spoiler="roof",
              wheel="multi", rim="silver"),
         (1997, 2024), 32000, aliases=("CRV", "CR V"), trims=("LX", "EX", "EX-L", "Touring", "Sport"),
         engines=("1.5T", "2.4L", "2.0 Hybrid"), extras=("AWD", "4WD", "FWD"), misspellings=("CR-5",)),
    _car("Ford", "Explorer", shape("suv", length=5.05, width=2.00, height=1.78, hood=1.30, screen=0.72,
                                   rear_glass=0.26, nose=1.00, tail=1.22),
         look("hexagon:chrome", "rect", "l_shape", "oval:blue", 3, "roof_light",
              roof="rack", trim="black", spoiler="roof", wheel="spokes6", rim="gunmetal"),
         (1991, 2024), 40000, trims=("XLT", "Limited", "Platinum", "ST", "Sport", "Eddie Bauer"),
         engines=("3.5L V6", "2.3L EcoBoost", "4.0L V6"), extras=("4WD", "AWD"), bodies=("3rd Row",), misspellings=("Explor",)),
    _car("Chevrolet", "Tahoe", shape("suv", length=5.35, width=2.06, height=1.92, ride=0.26, wheel=0.42,
                                     hood=1.55, screen=0.60, rear_glass=0.12, nose=1.15, belt=1.30, tail=1.35,
                                     tumble=0.08),
         look("split:black", "rect", "vertical", "bowtie:gold", 3, "running_boards", "tow_hook",
              roof="rack", trim="chrome", wheel="steel", rim="silver"),
         (1995, 2024), 58000, trims=("LS", "LT", "LTZ", "Premier", "Z71", "RST", "High Country"),
         engines=("5.3L V8", "6.2L V8"), extras=("4WD", "4x4", "2WD"), misspellings=("Tahoo",)),
    _car("Jeep", "Grand Cherokee", shape("suv", length=4.83, height=1.76, hood=1.42, screen=0.62,
                                         rear_glass=0.32, nose=1.02, tail=1.22, roof_slope=0.06),
         look("slots:chrome", "slit", "slim", "oval:black", 3, "tow_hook",
              trim="cladding", roof="rack", spoiler="roof", wheel="twin", rim="silver"),
         (1993, 2024), 42000, aliases=("Grand Cherokee L", "Grand Cherokee 4xe"),
         trims=("Laredo", "Limited", "Overland", "Summit", "Trailhawk", "SRT"),
         engines=("3.6L V6", "5.7L HEMI", "4.7L V8"), extras=("4x4", "4WD", "WK2"), misspellings=("Grand Cherokie",)),
    _car("Toyota", "Tacoma", shape("pickup", length=5.39, width=1.91, height=1.80, ride=0.27, wheel=0.39,
                                   nose=1.08, belt=1.22, hood=1.40, screen=0.68, rear_glass=0.10, deck=1.55,
                                   tail=1.22),
         look("hexagon:black", "swept", "rect", "diamond:silver", 2, "fender_flares",
              trim="none", roof="rack", wheel="spokes6", rim="black"),
         (1995, 2024), 36000, trims=("SR", "SR5", "TRD Sport", "TRD Off-Road", "TRD Pro", "Limited"),
         engines=("3.5L V6", "2.7L", "4.0L V6"), extras=("4x4", "4WD"), bodies=("Double Cab", "Access Cab"),
         misspellings=("Tacomma", "Tocoma")),
    _car("Honda", "Odyssey", shape("van", length=5.20, height=1.76, hood=0.95, screen=0.95, rear_glass=0.28),
         look("wide:black", "swept", "l_shape", "oval:silver", 3, "sliding_door",
              trim="chrome", roof="rack", spoiler="roof", wheel="spokes5", rim="silver"),
         (1995, 2024), 38000, trims=("LX", "EX", "EX-L", "Touring", "Elite"), engines=("3.5L V6",),
         bodies=("Minivan", "8 Passenger"), misspellings=("Odessey", "Oddysey")),
    _car("Chrysler", "Pacifica", shape("van", length=5.17, height=1.78, hood=0.90, screen=1.10, rear_glass=0.22,
                                       belt=1.06, nose=0.92, roof_arc=0.05, roof_slope=0.06),
         look("oval:chrome", "c_shape", "bar", "wings:silver", 3, "sliding_door",
              trim="none", roof="black", wheel="multi", rim="gunmetal"),
         (2017, 2024), 40000, trims=("Touring", "Touring L", "Limited", "Pinnacle"), engines=("3.6L V6", "Hybrid"),
         extras=("Hybrid", "AWD"), bodies=("Minivan",), misspellings=("Pacifca",)),
    _car("Subaru", "WRX", shape("sedan", length=4.60, height=1.47, hood=1.35, screen=0.72, rear_glass=0.62,
                                deck=0.52, nose=0.76, tail=0.98, ride=0.18, wheel=0.34),
         look("hexagon:black", "l_shape", "c_shape", "star:blue", 2, "hood_scoop", "quad_exhaust",
              spoiler="wing", wheel="spokes5", rim="bronze"),
         (2002, 2024), 33000, aliases=("WRX STI",), trims=("Base", "Premium", "Limited", "STI", "GT"),
         engines=("2.0T", "2.4T", "2.5T"), extras=("AWD", "6MT"), bodies=("Sedan",), misspellings=("WRZ",)),
    _car("Mazda", "CX-5", shape("suv", length=4.55, width=1.84, height=1.68, hood=1.32, screen=0.80,
                                rear_glass=0.55, nose=0.92, tail=1.08, roof_slope=0.08),
         look("oval:black", "slit", "slim", "wings:silver", 3, trim="black", roof="plain", spoiler="roof",
              wheel="twin", rim="gunmetal"),
         (2013, 2024), 30000, aliases=("CX5", "CX 5"), trims=("Sport", "Touring", "Grand Touring", "Signature"),
         engines=("2.5L", "2.5T"), extras=("AWD", "FWD")),
    _car("Mazda", "Mazda3", shape("hatchback", length=4.46, height=1.44, hood=1.25, screen=0.85, rear_glass=0.55,
                                  nose=0.72, tail=0.98),
         look("oval:grey", "slit", "round", "wings:silver", 2, trim="none", spoiler="roof",
              wheel="spokes6", rim="silver"),
         (2004, 2024), 24000, aliases=("3", "Mazda 3", "Mazda-3"), trims=("i Sport", "s Grand Touring", "Preferred",
                                                                     "Premium"),
         engines=("2.5L", "2.0L", "2.5T"), bodies=("Hatchback", "Sedan"), misspellings=("Madza3",)),
    _car("Nissan", "Rogue", shape("suv", length=4.65, width=1.84, height=1.72, hood=1.05, screen=0.90,
                                  rear_glass=0.40, nose=1.00, tail=1.16, ride=0.22),
         look("mesh:chrome", "split", "triangle", "circle:silver", 3, trim="chrome", roof="black", spoiler="roof",
              wheel="spokes5", rim="silver"),
         (2008, 2024), 29000, trims=("S", "SV", "SL", "Platinum"), engines=("2.5L", "1.5T"),
         extras=("AWD", "FWD"), misspellings=("Rouge",)),
    _car("Hyundai", "Elantra", shape("sedan", length=4.68, height=1.42, hood=1.22, screen=0.92, rear_glass=1.05,
                                     deck=0.32, nose=0.70, belt=0.95, tail=0.92, roof_arc=0.06),
         look("mesh:black", "slit", "bar", "oval:chrome", 3, trim="chrome", wheel="dish", rim="silver"),
         (1996, 2024), 22000, trims=("SE", "SEL", "Limited", "N Line", "GT"), engines=("2.0L", "1.6T", "1.8L"),
         extras=("Hybrid",), bodies=("Sedan",), misspellings=("Elentra", "Elantre")),
    _car("Hyundai", "Tucson", shape("suv", length=4.63, width=1.87, height=1.67, hood=1.10, screen=0.95,
                                    rear_glass=0.60, nose=0.94, tail=1.05, roof_slope=0.10),
         look("hexagon:grey", "split", "bar", "oval:silver", 3, "fog_lights", trim="cladding",
              spoiler="roof", wheel="spokes6", rim="black"),
         (2005, 2024), 29000, trims=("SE", "SEL", "N Line", "Limited"), engines=("2.5L", "2.0L", "1.6T"),
         extras=("AWD", "FWD", "Hybrid"), misspellings=("Tuscon", "Tucsan")),
    _car("Kia", "Soul", shape("hatchback", length=4.20, height=1.61, hood=0.85, screen=0.70, rear_glass=0.14,
                              belt=1.05, tail=1.10, tumble=0.05),
         look("bar:grey", "c_shape", "vertical", "oval:red", 3, "fog_lights", roof="black",
              wheel="spokes5", rim="silver"),
         (2010, 2024), 21000, trims=("LX", "S", "EX", "GT-Line", "X-Line", "Plus"), engines=("2.0L", "1.6T"),
         bodies=("Hatchback", "Wagon"), misspellings=("Sol",)),
    _car("Dodge", "Challenger", shape("coupe", length=5.03, height=1.45, nose=0.85, belt=1.05, hood=1.85,
                                      screen=0.70, rear_glass=0.85, deck=0.65, tail=1.05, tumble=0.08),
         look("wide:black", "twin", "bar", "shield:red", 1, "hood_scoop", "hood_stripes", "quad_exhaust",
              spoiler="lip", wheel="spokes5", rim="bronze"),
         (2008, 2023), 38000, trims=("SXT", "GT", "R/T", "Scat Pack", "SRT Hellcat", "Demon"),
         engines=("5.7L HEMI", "6.4L HEMI", "3.6L V6"), extras=("RWD",), bodies=("Coupe", "Widebody"),
         misspellings=("Challanger", "Challeneger")),
    _car("Tesla", "Model Y", shape("suv", length=4.75, width=1.92, height=1.62, hood=1.05, screen=1.05,
                                   rear_glass=0.80, nose=0.86, belt=1.08, tail=1.05, roof_arc=0.05),
         look("bar:black", "swept", "slim", "diamond:silver", 2, trim="none", roof="glass", spoiler="lip",
              wheel="multi", rim="silver"),
         (2020, 2024), 50000, aliases=("ModelY", "Model-Y"), trims=("Long Range", "Performance", "Standard Range"),
         engines=("Dual Motor", "Electric"), extras=("AWD", "EV"), bodies=("7 Seat",), misspellings=("Modle Y",)),
    _car("Mercedes-Benz", "G-Class", shape("suv", length=4.82, width=1.93, height=1.97, ride=0.26, wheel=0.41,
                                           hood=1.25, screen=0.22, rear_glass=0.04, nose=1.12, belt=1.30, tail=1.32,
                                           tumble=0.02, front_axle=0.78),
         look("slots:black", "round", "rect", "shield:silver", 3, "spare_wheel", "bull_bar", "running_boards",
              trim="black", wheel="spokes6", rim="black"),
         (2002, 2024), 140000, aliases=("G-Wagon", "G Wagon", "G Class", "Gelandewagen"),
         trims=("AMG", "Designo"), engines=("4.0L V8 Biturbo", "5.5L V8"), codes=("G550", "G63 AMG", "G500", "G55 AMG"),
         extras=("4MATIC", "W463"), misspellings=("G-Wagen",)),
    _car("Lexus", "RX", shape("suv", length=4.89, width=1.92, height=1.71, hood=1.25, screen=0.85,
                              rear_glass=0.65, nose=0.95, tail=1.10, roof_slope=0.06),
         look("mesh:grey", "l_shape", "l_shape", "oval:silver", 3, trim="chrome", roof="sunroof", spoiler="roof",
              wheel="twin", rim="silver"),
         (1999, 2024), 50000, aliases=("RX Series",), trims=("F Sport", "Luxury", "Premium"),
         engines=("3.5L V6", "2.4T", "Hybrid"), codes=("RX 350", "RX350", "RX 450h", "RX450h", "RX 330"),
         extras=("AWD", "FWD", "Hybrid"), misspellings=("RX-350",)),
    _car("Volkswagen", "Beetle", shape("hatchback", length=4.28, height=1.49, hood=1.00, screen=0.95,
                                       rear_glass=0.95, nose=0.74, belt=0.96, tail=0.88, roof_arc=0.14,
                                       rear_axle=0.19, front_axle=0.78),
         look("none:body", "round", "round", "oval:silver", 1, "tow_hook", trim="none", roof="sunroof",
              wheel="dish", rim="silver"),
         (1998, 2019), 22000, aliases=("New Beetle", "Beetle Convertible"), trims=("S", "SE", "R-Line", "Dune", "GLS"),
         engines=("1.8T", "2.0T", "2.5L", "TDI"), bodies=("Coupe", "Convertible", "Hatchback"),
         misspellings=("Beatle", "Bettle")),
    _car("Mini", "Cooper", shape("hatchback", length=3.86, width=1.73, height=1.41, ride=0.14, wheel=0.30,
                                 rear_axle=0.14, front_axle=0.84, hood=0.95, screen=0.60, rear_glass=0.12,
                                 tumble=0.06),
         look("oval:chrome", "round", "vertical", "wings:silver", 2, "hood_stripes", roof="black",
              wheel="spokes6", rim="white"),
         (2002, 2024), 27000, aliases=("Cooper S", "Cooper Hardtop"),
         trims=("S", "John Cooper Works", "JCW", "Signature", "Iconic"), engines=("1.6L", "2.0T", "1.5T"),
         extras=("R56", "F56"), bodies=("Hardtop", "2-Door", "4-Door", "Convertible"), misspellings=("Cooper SS",)),
    _car("Toyota", "Prius", shape("hatchback", length=4.57, height=1.47, hood=1.05, screen=1.10, rear_glass=1.10,
                                  nose=0.70, tail=1.00, belt=0.96),
         look("bar:black", "swept", "triangle", "circle:blue", 3, trim="none", spoiler="roof",
              wheel="dish", rim="silver"),
         (2001, 2024), 28000, aliases=("Prius Prime",), trims=("Two", "Three", "Four", "Five",
                                                                               "LE", "XLE", "Limited"),
         engines=("1.8L Hybrid", "2.0L Hybrid"), extras=("Hybrid", "Plug-In"), bodies=("Hatchback",), misspellings=("Pruis",)),
    _car("Ford", "Transit", shape("van", length=5.98, width=2.05, height=2.30, ride=0.20, wheel=0.37,
                                  rear_axle=0.21, front_axle=0.82, nose=1.05, belt=1.25, hood=1.00, screen=0.65,
                                  rear_glass=0.05, tail=2.10, tumble=0.03),
         look("trapezoid:grey", "rect", "vertical", "oval:blue", 1, "sliding_door", "panel_van", trim="black",
              wheel="steel", rim="silver"),
         (2015, 2024), 45000, aliases=("Transit 250", "Transit-350"),
         trims=("Cargo", "XL", "XLT", "Passenger"), engines=("3.5L EcoBoost", "3.7L V6", "3.2 Diesel"),
         extras=("148 WB",), bodies=("High Roof", "Medium Roof", "Low Roof", "Van"), misspellings=("Tranist",)),
    _car("Porsche", "Cayenne", shape("suv", length=4.92, width=1.98, height=1.70, hood=1.55, screen=0.80,
                                     rear_glass=0.60, nose=0.95, tail=1.12, roof_arc=0.03, roof_slope=0.05),
         look("wide:black", "twin", "bar", "shield:black", 3, "quad_exhaust", trim="black", spoiler="roof",
              wheel="spokes5", rim="gunmetal"),
         (2003, 2024), 80000, aliases=("Cayenne Coupe",), trims=("S", "GTS", "Turbo", "E-Hybrid", "Platinum Edition"),
         engines=("3.0L V6", "4.0L V8", "4.8L V8"), extras=("AWD", "Tiptronic"), misspellings=("Cayene", "Cayanne")),
    _car("Chevrolet", "Corvette", shape("coupe", length=4.63, width=1.93, height=1.24, ride=0.11, nose=0.58,
                                        belt=0.86, hood=1.15, screen=0.95, rear_glass=1.20, deck=0.55, tail=0.95,
                                        rear_axle=0.23, front_axle=0.80),
         look("mesh:black", "swept", "triangle", "wings:red", 1, "side_vents", "quad_exhaust",
              spoiler="lip", roof="black", wheel="multi", rim="black"),
         (1990, 2024), 70000, aliases=("Corvette Stingray", "Vette"), trims=("Stingray", "Z06", "Grand Sport", "Z51",
                                                                           "1LT", "3LT"),
         engines=("6.2L V8", "5.7L LS1", "6.0L V8"), extras=("C5", "C6", "C7", "C8"), bodies=("Coupe", "Convertible"),
         misspellings=("Corvete", "Corvett")),
)

_BY_CLASS = {spec.class_name: spec for spec in CARS}
_CANONICAL_MAKES = {name.lower(): spec.make for spec in CARS
                    for name in (spec.make, *MAKE_ALIASES.get(spec.make, ()))}


def spec_for(class_name: str) -> CarSpec:
    """The spec of a canonical class name ("Audi TT"); KeyError if unknown."""
    return _BY_CLASS[class_name]


def specs_outside(classes: Iterable[str]) -> tuple[CarSpec, ...]:
    """The sandbox's models that are not among ``classes``, in :data:`CARS` order: cars that a model
    trained on ``classes`` has never seen (the open-set evaluation's unknown models)."""
    known = set(classes)
    return tuple(spec for spec in CARS if spec.class_name not in known)


def canonical_make(name: str) -> str | None:
    """"VW" -> "Volkswagen"; None for a make the sandbox does not know. Case-insensitive."""
    return _CANONICAL_MAKES.get(name.strip().lower())


# --- seller text --------------------------------------------------------------------------------

_SELLER_PHRASES = ("Clean Title", "Low Miles", "One Owner", "NO RESERVE", "Runs Great", "Fully Loaded",
                   "Navigation", "Leather", "Backup Camera", "Must See", "Excellent Condition", "Warranty")
_TITLE_MAX = 80  # eBay's title limit


def _make_word(spec: CarSpec, rng: random.Random, misspell: float) -> str:
    aliases = MAKE_ALIASES.get(spec.make, ())
    typos = MAKE_MISSPELLINGS.get(spec.make, ())
    roll = rng.random()
    if typos and roll < misspell:
        return rng.choice(typos)
    if aliases and roll < 0.4:
        return rng.choice(aliases)
    return spec.make


def make_title(spec: CarSpec, rng: random.Random, year: int) -> str:
    """A seller's title: "2014 Audi TT 2.0T Quattro Coupe", "audi tt tdi", "VW Golf GTI MK7",
    "2019 FORD F-150 XLT SUPERCREW 4X4", "Mercedes C300 4MATIC", "BMW 328i xDrive"... (≤ 80 chars)."""
    names = spec.names
    words: list[str] = []
    if rng.random() < 0.8:
        words.append(str(year))
    if rng.random() < 0.95:
        words.append(_make_word(spec, rng, misspell=0.04))
    roll = rng.random()
    if names.codes and roll < 0.45:
        if rng.random() < 0.25:
            words.append(spec.model)
        words.append(rng.choice(names.codes))
    elif names.misspellings and roll < 0.04:
        words.append(rng.choice(names.misspellings))
    elif names.aliases and roll < 0.3:
        words.append(rng.choice(names.aliases))
    else:
        words.append(spec.model)
    for pool, chance in ((names.trims, 0.5), (names.engines, 0.3)):
        if pool and rng.random() < chance:
            words.append(rng.choice(pool))
    tail = [rng.choice(pool) for pool, chance in ((names.extras, 0.4), (names.bodies, 0.3))
            if pool and rng.random() < chance]
    rng.shuffle(tail)
    words += tail
    if rng.random() < 0.25:
        words.append(rng.choice(_SELLER_PHRASES))
    title = " ".join(dict.fromkeys(words))
    roll = rng.random()
    if roll < 0.12:
        title = title.upper()
    elif roll < 0.2:
        title = title.lower()
    return title if len(title) <= _TITLE_MAX else title[:_TITLE_MAX].rsplit(" ", 1)[0]


def seller_aspects(spec: CarSpec, rng: random.Random, year: int) -> dict[str, str]:
    """The seller's structured Make/Model/Year. Make is sometimes an alias ("VW", "Chevy"), Model
    sometimes carries a trim or extra ("F-150 XLT", "TT Quattro") or is a model code ("328i")."""
    names = spec.names
    make = _make_word(spec, rng, misspell=0.0)
    roll = rng.random()
    if names.codes and roll < 0.15:
        model = rng.choice(names.codes)
    elif names.aliases and roll < 0.3:
        model = rng.choice(names.aliases)
    elif roll < 0.45 and (names.trims or names.extras):
        model = f"{spec.model} {rng.choice(names.trims + names.extras)}"
    else:
        model = spec.model
    return {"Make": make, "Model": model, "Year": str(year)}

