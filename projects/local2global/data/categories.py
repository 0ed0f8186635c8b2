"""Category vocabularies of the VIS datasets and the COCO -> VIS category maps.

Facts transcribed from the official annotation files (ids and names exactly as in their ``categories``
lists; note OVIS's official spelling ``"Vehical"``) and, for the display colours and the COCO maps,
from the conventions shared by public VIS codebases (IFC / Mask2Former-VIS / MinVIS / DVIS / VITA).

* YouTube-VIS 2019: 40 classes.
* YouTube-VIS 2021: 40 classes (a different set); YouTube-VIS 2022 uses the 2021 vocabulary.
* OVIS: 25 classes.
* The built-in synthetic dataset (:mod:`local2global.data.synthetic`): 3 classes.

The COCO maps go from COCO *dataset* category ids (1..90, as in ``instances_train2017.json``) to the
target dataset's category ids; :func:`coco_category_map` converts them to the contiguous ids used by
the models (and, optionally, takes COCO contiguous ids 0..79 as source, which is what detectron2's
``load_coco_json`` produces for a registered COCO dataset).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

__all__ = [
    "YTVIS_2019_CATEGORIES",
    "YTVIS_2021_CATEGORIES",
    "YTVIS_2022_CATEGORIES",
    "OVIS_CATEGORIES",
    "SYNTHETIC_VIS_CATEGORIES",
    "COCO_TO_YTVIS_2019",
    "COCO_TO_YTVIS_2021",
    "COCO_TO_OVIS",
    "thing_classes",
    "thing_colors",
    "thing_dataset_id_to_contiguous_id",
    "vis_metadata",
    "get_categories",
    "coco_category_map",
]


def _make(rows: Sequence[tuple]) -> List[dict]:
    """``(id, name, (r, g, b))`` rows -> detectron2-style category dicts."""
    return [{"id": i, "name": n, "color": list(c), "isthing": 1} for i, n, c in rows]


#: YouTube-VIS 2019 (``train.json`` / ``valid.json`` of the 2019 challenge).
YTVIS_2019_CATEGORIES = _make([
    (1, "person", (220, 20, 60)), (2, "giant_panda", (0, 82, 0)), (3, "lizard", (119, 11, 32)),
    (4, "parrot", (165, 42, 42)), (5, "skateboard", (134, 134, 103)), (6, "sedan", (0, 0, 142)),
    (7, "ape", (255, 109, 65)), (8, "dog", (0, 226, 252)), (9, "snake", (5, 121, 0)),
    (10, "monkey", (0, 60, 100)), (11, "hand", (250, 170, 30)), (12, "rabbit", (100, 170, 30)),
    (13, "duck", (179, 0, 194)), (14, "cat", (255, 77, 255)), (15, "cow", (120, 166, 157)),
    (16, "fish", (73, 77, 174)), (17, "train", (0, 80, 100)), (18, "horse", (182, 182, 255)),
    (19, "turtle", (0, 143, 149)), (20, "bear", (174, 57, 255)), (21, "motorbike", (0, 0, 230)),
    (22, "giraffe", (72, 0, 118)), (23, "leopard", (255, 179, 240)), (24, "fox", (0, 125, 92)),
    (25, "deer", (209, 0, 151)), (26, "owl", (188, 208, 182)), (27, "surfboard", (145, 148, 174)),
    (28, "airplane", (106, 0, 228)), (29, "truck", (0, 0, 70)), (30, "zebra", (199, 100, 0)),
    (31, "tiger", (166, 196, 102)), (32, "elephant", (110, 76, 0)), (33, "snowboard", (133, 129, 255)),
    (34, "boat", (0, 0, 192)), (35, "shark", (183, 130, 88)), (36, "mouse", (130, 114, 135)),
    (37, "frog", (107, 142, 35)), (38, "eagle", (0, 228, 0)), (39, "earless_seal", (174, 255, 243)),
    (40, "tennis_racket", (255, 208, 186)),
])

#: YouTube-VIS 2021 (also the vocabulary of YouTube-VIS 2022).
YTVIS_2021_CATEGORIES = _make([
    (1, "airplane", (106, 0, 228)), (2, "bear", (174, 57, 255)), (3, "bird", (255, 109, 65)),
    (4, "boat", (0, 0, 192)), (5, "car", (0, 0, 142)), (6, "cat", (255, 77, 255)),
    (7, "cow", (120, 166, 157)), (8, "deer", (209, 0, 151)), (9, "dog", (0, 226, 252)),
    (10, "duck", (179, 0, 194)), (11, "earless_seal", (174, 255, 243)), (12, "elephant", (110, 76, 0)),
    (13, "fish", (73, 77, 174)), (14, "flying_disc", (250, 170, 30)), (15, "fox", (0, 125, 92)),
    (16, "frog", (107, 142, 35)), (17, "giant_panda", (0, 82, 0)), (18, "giraffe", (72, 0, 118)),
    (19, "horse", (182, 182, 255)), (20, "leopard", (255, 179, 240)), (21, "lizard", (119, 11, 32)),
    (22, "monkey", (0, 60, 100)), (23, "motorbike", (0, 0, 230)), (24, "mouse", (130, 114, 135)),
    (25, "parrot", (165, 42, 42)), (26, "person", (220, 20, 60)), (27, "rabbit", (100, 170, 30)),
    (28, "shark", (183, 130, 88)), (29, "skateboard", (134, 134, 103)), (30, "snake", (5, 121, 0)),
    (31, "snowboard", (133, 129, 255)), (32, "squirrel", (188, 208, 182)), (33, "surfboard", (145, 148, 174)),
    (34, "tennis_racket", (255, 208, 186)), (35, "tiger", (166, 196, 102)), (36, "train", (0, 80, 100)),
    (37, "truck", (0, 0, 70)), (38, "turtle", (0, 143, 149)), (39, "whale", (0, 228, 0)),
    (40, "zebra", (199, 100, 0)),
])

#: YouTube-VIS 2022 shares the 2021 vocabulary.
YTVIS_2022_CATEGORIES = YTVIS_2021_CATEGORIES

#: OVIS (names capitalised as in the official files, including the misspelt "Vehical").
OVIS_CATEGORIES = _make([
    (1, "Person", (220, 20, 60)), (2, "Bird", (255, 109, 65)), (3, "Cat", (255, 77, 255)),
    (4, "Dog", (0, 226, 252)), (5, "Horse", (182, 182, 255)), (6, "Sheep", (0, 125, 92)),
    (7, "Cow", (120, 166, 157)), (8, "Elephant", (110, 76, 0)), (9, "Bear", (174, 57, 255)),
    (10, "Zebra", (199, 100, 0)), (11, "Giraffe", (72, 0, 118)), (12, "Poultry", (179, 0, 194)),
    (13, "Giant_panda", (0, 82, 0)), (14, "Lizard", (119, 11, 32)), (15, "Parrot", (165, 42, 42)),
    (16, "Monkey", (0, 60, 100)), (17, "Rabbit", (100, 170, 30)), (18, "Tiger", (166, 196, 102)),
    (19, "Fish", (73, 77, 174)), (20, "Turtle", (0, 143, 149)), (21, "Bicycle", (134, 134, 103)),
    (22, "Motorcycle", (0, 0, 230)), (23, "Airplane", (106, 0, 228)), (24, "Boat", (0, 0, 192)),
    (25, "Vehical", (0, 0, 70)),
])

#: The built-in synthetic dataset's classes (class-specific shape and texture, see ``synthetic.py``).
SYNTHETIC_VIS_CATEGORIES = _make([
    (1, "striped_disk", (230, 80, 60)),
    (2, "checkered_square", (60, 160, 230)),
    (3, "dotted_triangle", (90, 200, 90)),
])

#: COCO dataset category id -> YouTube-VIS 2019 category id (21 COCO classes; bicycle and motorcycle both
#: map to "motorbike", skis and snowboard to "snowboard").
COCO_TO_YTVIS_2019: Dict[int, int] = {
    1: 1, 2: 21, 3: 6, 4: 21, 5: 28, 7: 17, 8: 29, 9: 34, 17: 14, 18: 8, 19: 18, 21: 15, 22: 32, 23: 20,
    24: 30, 25: 22, 35: 33, 36: 33, 41: 5, 42: 27, 43: 40,
}

#: COCO dataset category id -> YouTube-VIS 2021 (and 2022) category id (23 COCO classes).
COCO_TO_YTVIS_2021: Dict[int, int] = {
    1: 26, 2: 23, 3: 5, 4: 23, 5: 1, 7: 36, 8: 37, 9: 4, 16: 3, 17: 6, 18: 9, 19: 19, 21: 7, 22: 12,
    23: 2, 24: 40, 25: 18, 34: 14, 35: 31, 36: 31, 41: 29, 42: 33, 43: 34,
}

#: COCO dataset category id -> OVIS category id (17 COCO classes; car, bus and truck all map to "Vehical").
COCO_TO_OVIS: Dict[int, int] = {
    1: 1, 2: 21, 3: 25, 4: 22, 5: 23, 6: 25, 8: 25, 9: 24, 17: 3, 18: 4, 19: 5, 20: 6, 21: 7, 22: 8,
    23: 9, 24: 10, 25: 11,
}

_VOCABULARIES = {
    "ytvis_2019": (YTVIS_2019_CATEGORIES, COCO_TO_YTVIS_2019),
    "ytvis_2021": (YTVIS_2021_CATEGORIES, COCO_TO_YTVIS_2021),
    "ytvis_2022": (YTVIS_2022_CATEGORIES, COCO_TO_YTVIS_2021),
    "ovis": (OVIS_CATEGORIES, COCO_TO_OVIS),
    "synthetic_vis": (SYNTHETIC_VIS_CATEGORIES, None),
}


def get_categories(vocabulary: str) -> List[dict]:
    """The category list of ``"ytvis_2019"``, ``"ytvis_2021"``, ``"ytvis_2022"``, ``"ovis"`` or ``"synthetic_vis"``.

    A dataset name such as ``"ytvis_2019_train"`` or ``"ovis_val"`` is accepted too (longest matching prefix).
    """
    for key in sorted(_VOCABULARIES, key=len, reverse=True):
        if vocabulary == key or vocabulary.startswith(key + "_"):
            return _VOCABULARIES[key][0]
    raise KeyError(f"unknown VIS vocabulary {vocabulary!r}; known: {sorted(_VOCABULARIES)}")


def thing_classes(categories: Sequence[dict]) -> List[str]:
    """Class names ordered by category id (the contiguous order)."""
    return [c["name"] for c in sorted(categories, key=lambda c: c["id"])]


def thing_colors(categories: Sequence[dict]) -> List[List[int]]:
    """Display colours ordered by category id (``[128, 128, 128]`` where a category has none)."""
    return [list(c.get("color", (128, 128, 128))) for c in sorted(categories, key=lambda c: c["id"])]


def thing_dataset_id_to_contiguous_id(categories: Sequence[dict]) -> Dict[int, int]:
    """Dataset category id -> contiguous id ``0..K-1`` (sorted by dataset id, detectron2's convention)."""
    ids = sorted(int(c["id"]) for c in categories)
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate category ids in {ids}")
    return {cid: i for i, cid in enumerate(ids)}


def vis_metadata(categories_or_vocabulary) -> dict:
    """Detectron2 metadata (``thing_classes``, ``thing_colors``, ``thing_dataset_id_to_contiguous_id``).

    Args:
        categories_or_vocabulary: a category list or a vocabulary / dataset name (see :func:`get_categories`).
    """
    cats = (
        get_categories(categories_or_vocabulary)
        if isinstance(categories_or_vocabulary, str)
        else list(categories_or_vocabulary)
    )
    return {
        "thing_classes": thing_classes(cats),
        "thing_colors": thing_colors(cats),
        "thing_dataset_id_to_contiguous_id": thing_dataset_id_to_contiguous_id(cats),
    }


def coco_category_map(target: str, source_ids: str = "dataset") -> Dict[int, int]:
    """COCO category -> target *contiguous* category id, for the pseudo-video mapper.

    Args:
        target: ``"ytvis_2019"``, ``"ytvis_2021"``, ``"ytvis_2022"`` or ``"ovis"`` (or a dataset name of them).
        source_ids: ``"dataset"`` if the COCO dicts carry COCO dataset ids (1..90, ``load_coco_json``
            without a dataset name), ``"contiguous"`` if they carry detectron2's contiguous COCO ids
            (0..79, ``load_coco_json`` of a registered COCO dataset such as ``coco_2017_train``).

    Returns:
        ``{coco id: target contiguous id}``; COCO classes absent from the map have no entry (dropped).
    """
    key = next((k for k in sorted(_VOCABULARIES, key=len, reverse=True)
                if target == k or target.startswith(k + "_")), None)
    if key is None or _VOCABULARIES[key][1] is None:
        raise KeyError(f"no COCO category map for {target!r}; known: ytvis_2019, ytvis_2021, ytvis_2022, ovis")
    cats, coco_map = _VOCABULARIES[key]
    to_contig = thing_dataset_id_to_contiguous_id(cats)
    out = {coco_id: to_contig[tid] for coco_id, tid in coco_map.items()}
    if source_ids == "dataset":
        return out
    if source_ids == "contiguous":
        from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

        coco_ids = sorted(c["id"] for c in COCO_CATEGORIES if c["isthing"])
        coco_to_contig = {cid: i for i, cid in enumerate(coco_ids)}
        return {coco_to_contig[cid]: v for cid, v in out.items()}
    raise ValueError(f"source_ids must be 'dataset' or 'contiguous', got {source_ids!r}")
