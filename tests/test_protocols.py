"""Evaluation-protocol presets (zoo.data.protocols): the table, its use by every parser, and its
fit with the metrics' protocol object (zoo.core.metrics.EvalProtocol).

The expected values follow shared/reference/DATASETS.md §1E (ZJU-MoCap), §2F (PeopleSnapshot),
§3E (NeuMan), §4D (X-Humans) and §5.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from zoo.core.metrics import EvalProtocol
from zoo.data import protocols
from zoo.data.parsers import PARSERS
from zoo.data.protocols import DATASET_PROTOCOLS, GENERIC_PROTOCOLS, PROTOCOLS, get_protocol, protocol_for
from zoo.data.schema import PROTOCOL_KEYS, validate_protocol
from zoo.data.writers import write

# shared capture builders and the body-model fixture (pytest puts tests/ on sys.path)
from test_parsers import _neuman_capture, _ps_capture, _xh_capture, _zju_capture, body_env  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
WHITE, BLACK = (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)

#: The headline preset each parser attaches by default.
HEADLINE = {"people_snapshot": "people_snapshot", "zju_mocap": "zju_mocap", "neuman": "neuman", "x_humans": "x_humans"}


def _fields(name: str, *keys: str) -> tuple:
    protocol = get_protocol(name)
    return tuple(protocol[k] for k in keys)


# --------------------------------------------------------------------------------------------
# The table


def test_presets_follow_the_datasets_reference():
    keys = ("crop", "background", "lpips_net", "lpips_input", "lpips_scale", "resolution")
    # §2F: InstantAvatar / GaussianAvatar / GoMAvatar; 3DGS-Avatar on black
    assert _fields("people_snapshot", *keys) == ("full", WHITE, "alex", "zero_one_as_is", 1, (540, 540))
    assert _fields("people_snapshot_3dgs_avatar", *keys) == ("full", BLACK, "alex", "zero_one_as_is", 1, (540, 540))
    # §1E: 3DGS-Avatar mono (headline), Neural Body box crop, refined / GauHuman [0,1] as-is, GoMAvatar x1000
    assert _fields("zju_mocap", *keys) == ("full", BLACK, "vgg", "minus_one_one", 1, (512, 512))
    assert _fields("zju_mocap_neuralbody", *keys) == ("bbox", BLACK, "vgg", "minus_one_one", 1, (512, 512))
    assert _fields("zju_mocap_refined", *keys) == ("full", BLACK, "vgg", "zero_one_as_is", 1, (512, 512))
    assert _fields("zju_mocap_gauhuman", *keys) == ("full", BLACK, "vgg", "zero_one_as_is", 1, (512, 512))
    assert _fields("zju_mocap_gomavatar", *keys) == ("full", BLACK, "vgg", "minus_one_one", 1000, (512, 512))
    # §3E: ExAvatar human-on-white (headline), HUGS tight mask-bbox crop, ml-neuman whole scene
    assert _fields("neuman", *keys) == ("full", WHITE, "alex", "minus_one_one", 1, None)
    assert _fields("neuman_hugs", *keys, "bbox_pad") == ("bbox", None, "alex", "zero_one_as_is", 1, None, 0)
    assert _fields("neuman_full_scene", *keys) == ("full", None, "alex", "minus_one_one", 1, None)
    # §4D: ExAvatar, 800 (W) x 1200 (H) on white
    assert _fields("x_humans", *keys) == ("full", WHITE, "alex", "minus_one_one", 1, (1200, 800))
    assert _fields("synthetic", "crop", "bbox_pad", "lpips_input") == ("full", 4, "minus_one_one")
    # every preset says which codebase it reproduces
    assert all(p["source"] for p in PROTOCOLS.values())


def test_table_is_consistent():
    assert set(DATASET_PROTOCOLS) == set(PARSERS)
    for name, protocol in PROTOCOLS.items():
        assert protocol["name"] == name
        assert tuple(protocol) == PROTOCOL_KEYS
        validate_protocol(protocol)
    listed = [n for names in DATASET_PROTOCOLS.values() for n in names] + list(GENERIC_PROTOCOLS)
    assert sorted(listed) == sorted(PROTOCOLS)  # every preset belongs somewhere, exactly once
    for dataset, names in DATASET_PROTOCOLS.items():
        assert names[0] == HEADLINE[dataset]


def test_get_protocol_copies_and_names_the_known_ones():
    p = get_protocol("zju_mocap_gomavatar")
    assert p["lpips_scale"] == 1000
    p["lpips_scale"] = 1
    assert get_protocol("zju_mocap_gomavatar")["lpips_scale"] == 1000
    assert get_protocol("neuman_hugs")["crop"] == "bbox"
    with pytest.raises(KeyError, match="known.*people_snapshot"):
        get_protocol("h36m")


def test_protocol_for_selects_within_a_dataset():
    assert protocol_for("neuman") == get_protocol("neuman")
    assert protocol_for("neuman", "neuman_hugs") == get_protocol("neuman_hugs")
    assert protocol_for("zju_mocap", default="zju_mocap_refined") == get_protocol("zju_mocap_refined")
    assert protocol_for("x_humans", "synthetic") == get_protocol("synthetic")
    with pytest.raises(ValueError, match="eval_protocol must be one of.*neuman_full_scene"):
        protocol_for("neuman", "zju_mocap_gomavatar")
    with pytest.raises(KeyError, match="known"):
        protocol_for("h36m")


# --------------------------------------------------------------------------------------------
# The table and the metrics' protocol object


def test_protocol_keys_are_the_eval_protocol_fields():
    assert PROTOCOL_KEYS == tuple(f.name for f in dataclasses.fields(EvalProtocol))


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_eval_protocol_accepts_every_preset(name: str):
    preset = get_protocol(name)
    proto = EvalProtocol(**preset)
    assert proto.name == name and proto.crop == preset["crop"] and proto.bbox_pad == preset["bbox_pad"]
    assert proto.background == preset["background"] and proto.resolution == preset["resolution"]
    assert (proto.lpips_net, proto.lpips_input) == (preset["lpips_net"], preset["lpips_input"])
    assert proto.lpips_scale == float(preset["lpips_scale"]) and proto.source == preset["source"]
    assert EvalProtocol(**proto.as_dict()) == proto
    # what the runner stores in a checkpoint: the parser's protocol with the config's overrides on top
    overrides = {"name": "synthetic", "resolution": None, "lpips_net": "alex", "background": [0.0, 0.0, 0.0]}
    assert EvalProtocol(**{**preset, **overrides}).background == BLACK


def test_layers_keep_their_doors():
    """protocols.py imports only the schema; core's metrics name no dataset."""
    tree = ast.parse(Path(protocols.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported <= {"__future__", "typing", "zoo.data.schema"}
    text = (REPO / "zoo" / "core" / "metrics.py").read_text()
    for word in ("people_snapshot", "zju", "neuman", "x_humans"):
        assert word not in text.lower(), word


# --------------------------------------------------------------------------------------------
# Every parser takes its protocol from the table


@pytest.fixture
def subjects(body_env: Path, tmp_path: Path) -> dict[str, tuple[Path, dict]]:
    """One small subject per format: format -> (subject folder, parser options)."""
    return {
        "zju_mocap": (write("zju_mocap", _zju_capture(body_env, camera_ids=(0, 1), frame_ids=[0, 1, 2, 3]), tmp_path), {}),
        "people_snapshot": (write("people_snapshot", _ps_capture(body_env), tmp_path), {"train_step": 2}),
        "neuman": (write("neuman", _neuman_capture(body_env), tmp_path), {}),
        "x_humans": (write("x_humans", _xh_capture(body_env), tmp_path), {}),
    }


def test_every_parser_defaults_to_its_headline_preset_and_selects_variants(subjects):
    for fmt, (path, options) in subjects.items():
        seq = PARSERS[fmt](path, **options)
        assert seq.protocol == get_protocol(HEADLINE[fmt]) == protocol_for(fmt), fmt
        EvalProtocol(**seq.protocol)
        for name in DATASET_PROTOCOLS[fmt][1:] + GENERIC_PROTOCOLS:
            variant = PARSERS[fmt](path, eval_protocol=name, **options)
            assert variant.protocol == get_protocol(name), (fmt, name)
            assert variant.splits == seq.splits, (fmt, name)  # the evaluation preset never changes splits
        seq.protocol["name"] = "changed"  # a sequence's protocol is its own copy
        assert PROTOCOLS[HEADLINE[fmt]]["name"] == HEADLINE[fmt]


def test_zju_split_protocol_picks_its_evaluation_preset(subjects):
    path, _ = subjects["zju_mocap"]
    nb = PARSERS["zju_mocap"](path, protocol="neuralbody_4view")
    assert nb.protocol_name == "neuralbody_4view" and nb.protocol == get_protocol("zju_mocap_neuralbody")
    gom = PARSERS["zju_mocap"](path, protocol="neuralbody_4view", eval_protocol="zju_mocap_gomavatar")
    assert gom.protocol == get_protocol("zju_mocap_gomavatar") and gom.splits == nb.splits


@pytest.mark.parametrize("fmt", sorted(PARSERS))
def test_unknown_eval_protocol_is_refused_before_reading(fmt: str, tmp_path: Path):
    with pytest.raises(ValueError, match=f"eval_protocol must be one of.*{HEADLINE[fmt]}"):
        PARSERS[fmt](tmp_path / "missing", eval_protocol="h36m")
