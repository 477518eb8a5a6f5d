"""The source table of real scenes: classes, event types, packages and recordings.

:data:`DEBIAN_SOURCES` is the table ``listenable scenes --sources real`` uses; a
:class:`SourceTable` of one's own (other packages, or small files in tests) can be passed
to :func:`~listenable.data.scenes.real.write_real_scenes` instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from listenable.errors import DatasetError

__all__ = [
    "DEBIAN_SOURCES",
    "REAL_CLASSES",
    "REAL_EVENT_TYPES",
    "Package",
    "SourceFile",
    "SourceTable",
]


@dataclass(frozen=True)
class Package:
    """A Debian package and what its copyright file (``usr/share/doc/NAME/copyright``)
    states for the recordings used: their copyright holders and licence."""

    name: str
    copyright: str
    licence: str


@dataclass(frozen=True)
class SourceFile:
    """One recording: ``path`` inside the extracted package (``usr/share/...``), or sample
    ``member`` of an OpenTTD ``.cat`` sound container there.

    ``kind`` is an event type of the table or ``"background"``; files cut from one original
    recording share a ``group`` (default: the file itself), which keeps them on one side of
    the train/evaluate split. ``credit``/``licence``: its author and licence as the package
    credits them (for a ``.cat`` member, the description stored with the sample is added).
    """

    package: str
    path: str
    kind: str
    member: int | None = None
    group: str = ""
    credit: str = ""
    licence: str = ""

    @property
    def id(self) -> str:
        member = "" if self.member is None else f"#{self.member}"
        return f"{self.package}:{self.path}{member}"


@dataclass(frozen=True)
class SourceTable:
    """Classes, their signature event types, the event lengths ``(shortest, longest)``
    in seconds of each type, the packages and the recordings."""

    name: str
    classes: tuple[str, ...]
    event_types: dict[str, str]
    durations: dict[str, tuple[float, float]]
    packages: tuple[Package, ...]
    files: tuple[SourceFile, ...]

    def validate(self) -> None:
        """Raise :class:`DatasetError` unless every class has an event type with at least
        one recording, there is a background recording, and every package is declared."""
        where = f"source table {self.name!r}"
        missing = [c for c in self.classes if c not in self.event_types]
        kinds = {f.kind for f in self.files}
        types = [self.event_types[c] for c in self.classes if c in self.event_types]
        if missing or len(set(types)) != len(types):
            raise DatasetError(f"{where}: classes need one distinct event type each ({missing})")
        for kind in [*types, "background"]:
            if kind not in kinds:
                raise DatasetError(f"{where}: no recording of kind {kind!r}")
        for kind in types:
            if kind not in self.durations:
                raise DatasetError(f"{where}: no event durations for {kind!r}")
        names = {p.name for p in self.packages}
        for f in self.files:
            if f.package not in names:
                raise DatasetError(f"{where}: {f.id} names undeclared package {f.package!r}")
            if f.kind != "background" and f.kind not in types:
                raise DatasetError(f"{where}: {f.id} has unknown kind {f.kind!r}")


# --------------------------------------------------------------------------- the sources

_OPENSFX = "usr/share/games/openttd/baseset/opensfx/opensfx.cat"
_LINCITY = "usr/share/games/lincity-ng/sounds/"
_MINETEST = "usr/share/games/minetest/games/minetest_game/mods/"
_CC0 = "CC0-1.0"
_CCBY = "CC-BY-3.0"


def _sfx(member: int, kind: str, group: str = "") -> SourceFile:
    return SourceFile("openttd-opensfx", _OPENSFX, kind, member=member, group=group)


def _lincity(name: str) -> SourceFile:
    return SourceFile(
        "lincity-ng-data",
        f"{_LINCITY}{name}.wav",
        "background",
        credit="LinCity-NG sound effects (Paulo Augusto, Robert van Herk)",
        licence="GPL-2+ or CC-BY-SA-2.0",
    )


def _minetest(path: str, credit: str, licence: str, group: str = "") -> SourceFile:
    return SourceFile(
        "minetest-data", _MINETEST + path, "background", group=group, credit=credit, licence=licence
    )


REAL_CLASSES = (
    "airport",
    "construction_site",
    "farm",
    "harbour",
    "park",
    "railway_station",
    "street_traffic",
)
#: The signature event type of each real class (``events.csv`` ``event_label``).
REAL_EVENT_TYPES = {
    "airport": "aircraft",
    "construction_site": "machinery",
    "farm": "livestock",
    "harbour": "ship_horn",
    "park": "birdsong",
    "railway_station": "train",
    "street_traffic": "road_vehicle",
}

#: The packages and recordings of ``listenable scenes --sources real`` (about 58 MB of
#: packages). Event recordings are listed train first: the last ~30 % of each type's groups
#: are the evaluate ones. OpenSFX samples carry their own credits in ``opensfx.cat``.
DEBIAN_SOURCES = SourceTable(
    name="debian-1",
    classes=REAL_CLASSES,
    event_types=REAL_EVENT_TYPES,
    durations={
        "aircraft": (1.0, 3.5),
        "machinery": (1.0, 3.0),
        "livestock": (0.8, 2.0),
        "ship_horn": (1.0, 3.0),
        "birdsong": (0.8, 3.0),
        "train": (1.0, 3.0),
        "road_vehicle": (1.0, 3.5),
    },
    packages=(
        Package(
            "openttd-opensfx",
            copyright="Various authors (see readme.txt, section 4, and each sample's "
            "description in opensfx.cat)",
            licence="CC-BY-SA-3.0 (the collection; single sounds CC-BY-3.0, CC-BY-SA-3.0 "
            "or CC0-1.0 as each sample's description states)",
        ),
        Package(
            "lincity-ng-data",
            copyright="1995-1997 I J Peters; 1997-2002 Greg Sharp; 2000-2004 Corey "
            "Keasling; 2004 Ingo Ruhnke; 2005 David Kamphausen; 2005 Jimmy Salmon; "
            "2005-2007 Wolfgang Becker; 2004-2008 Matthias Braun; 2008 Xabier Cancela",
            licence="GPL-2+ (sound effects dual-licensed GPL and CC-BY-SA-2.0)",
        ),
        Package(
            "minetest-data",
            copyright="2010-2016 celeron55, Perttu Ahola and the Minetest Game "
            "contributors (Files: *.ogg); authors of each sound in the mod's README.txt",
            licence="CC-BY-SA-3.0 (single sounds CC0-1.0 or CC-BY-3.0 as the mod's "
            "README.txt states)",
        ),
    ),
    files=(
        # aircraft: train | evaluate (jet take-offs)
        _sfx(8, "aircraft"),  # propeller plane start (Cheeseheadburger)
        _sfx(24, "aircraft"),  # helicopter (lorenzosu)
        _sfx(59, "aircraft"),  # landing jet, close (bigpickle51)
        _sfx(69, "aircraft"),  # propeller aeroplane (MrVasLuk)
        _sfx(9, "aircraft", group="digifishmusic-jet"),  # passenger jet departs
        _sfx(61, "aircraft"),  # Blue Angels jets (ibisradio)
        # machinery
        _sfx(33, "machinery"),  # jackhammer (Bluesy1905)
        _sfx(56, "machinery"),  # chainsaw (JFBSAUVE)
        _sfx(39, "machinery"),  # smithy hammering (l0calh05t)
        _sfx(40, "machinery"),  # circular saw (Benboncan)
        _sfx(11, "machinery"),  # lift machinery (Aldor)
        # livestock
        _sfx(36, "livestock"),  # sheep (David R Barnes)
        _sfx(38, "livestock"),  # horse (dobroide)
        _sfx(37, "livestock"),  # cow (JarredGibb)
        # ship horns
        _sfx(6, "ship_horn"),  # ship horn, Bergen (Leon Milo)
        _sfx(7, "ship_horn"),  # ferry horn, Bergen (Leon Milo)
        # birdsong
        _sfx(66, "birdsong"),  # Bird Noise 1 (SpaceJoe)
        _sfx(72, "birdsong"),  # Bird Noise 12 (SpaceJoe)
        # trains
        _sfx(4, "train", group="eliasheuninck-steam"),  # steam train departure
        _sfx(5, "train", group="eliasheuninck-steam"),  # the same horn, into a tunnel
        _sfx(71, "train"),  # train passby (Metzik)
        _sfx(14, "train"),  # level crossing bell (Mark_Ian)
        _sfx(10, "train"),  # diesel locomotive horn (patchen)
        # road vehicles
        _sfx(25, "road_vehicle", group="saphix-truck"),  # truck pulls away
        _sfx(26, "road_vehicle", group="saphix-truck"),  # the same, with an air horn
        _sfx(35, "road_vehicle"),  # car horn (han1)
        _sfx(28, "road_vehicle"),  # old bus start (roscoetoon)
        _sfx(27, "road_vehicle"),  # London bus (icmusic)
        # the shared background pool: water, fire, furnace, wind, traffic, crowds
        *(
            _minetest(
                f"env_sounds/sounds/env_sounds_water.{k}.ogg",
                "Yuval, freesound.org/people/Yuval/sounds/197023",
                _CC0,
                group="yuval-water",
            )
            for k in (1, 2, 3, 4)
        ),
        *(
            _minetest(
                f"fire/sounds/{name}.ogg",
                "Dynamicell, freesound.org/people/Dynamicell/sounds/17548",
                _CCBY,
                group="dynamicell-fire",
            )
            for name in ("fire_fire.1", "fire_fire.2", "fire_fire.3", "fire_large")
        ),
        _minetest(
            "fire/sounds/fire_small.ogg",
            "dobroide, freesound.org/people/dobroide/sounds/4211",
            _CCBY,
        ),
        _minetest(
            "default/sounds/default_furnace_active.ogg",
            "iankath, freesound.org/people/iankath/sounds/173991",
            _CC0,
        ),
        SourceFile("openttd-opensfx", _OPENSFX, "background", member=52),  # wind (Anton)
        *(
            _lincity(name)
            for name in (
                "TraficHigh1",
                "TraficHigh2",
                "TraficHigh3",
                "TraficLow1",
                "TraficLow2",
                "ResidentialHigh2",
                "ResidentialMed1",
                "SportsCroud2",
                "SportsCroud3",
                "MarketFull1",
                "Water5",
            )
        ),
    ),
)
