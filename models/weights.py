"""Model files and the registry.

A model is two .npz files, so the decoder container ships only what it needs:
- <name>.dec.npz: synthesis weights (fp16), the integer hyper-synthesis, and the
  z and y CDF tables. Its sha256 is the model's identity: the registry stores
  8 hex digits, the bitstream header the first 4 (16 bits).
- <name>.enc.npz: analysis and hyper-analysis weights (fp16), encoder only.

The registry (models/registry.yaml) maps each challenge target to a model.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from models.charm import BITSTREAM_VERSION as SLICES_VERSION
from models.charm import IntCharm
from models.coding import CdfTable
from models.intnet import IntHyperSynthesis
from models.targets import TARGETS

FORMAT_VERSION = 1
MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_REGISTRY = MODELS_DIR / "registry.yaml"


def registry_path(path: str | os.PathLike | None = None) -> Path:
    """Explicit path, else $RATELOCK_REGISTRY, else the committed registry."""
    return Path(path or os.environ.get("RATELOCK_REGISTRY") or DEFAULT_REGISTRY)


def file_hash(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:8]


@dataclass(frozen=True)
class Entry:
    target_index: int
    name: str
    prefix: Path          # <prefix>.dec.npz / <prefix>.enc.npz
    hash: str             # 8 hex digits of sha256(<prefix>.dec.npz)
    trained: bool
    note: str = ""

    @property
    def dec_path(self) -> Path:
        return self.prefix.with_name(self.prefix.name + ".dec.npz")

    @property
    def enc_path(self) -> Path:
        return self.prefix.with_name(self.prefix.name + ".enc.npz")

    @property
    def hash16(self) -> int:
        return int(self.hash[:4], 16)


@dataclass
class Registry:
    path: Path
    entries: list[Entry] = field(default_factory=list)

    def by_target(self, index: int) -> Entry:
        for e in self.entries:
            if e.target_index == index:
                return e
        raise KeyError(index)


def load_registry(path: str | os.PathLike | None = None) -> Registry:
    p = registry_path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model registry {p} not found (set --registry or $RATELOCK_REGISTRY)")
    data = yaml.safe_load(p.read_text()) or {}
    entries = []
    for item in data.get("models", []):
        ti = TARGETS.index(float(item["target"]))
        entries.append(Entry(ti, item["name"], (p.parent / item["weights"]).resolve(), str(item["hash"]),
                             bool(item.get("trained", False)), str(item.get("note", ""))))
    return Registry(p, sorted(entries, key=lambda e: e.target_index))


def write_registry(path: str | os.PathLike, rows: list[dict[str, Any]], comment: str = "") -> None:
    p = Path(path)
    text = (comment + "\n" if comment else "") + yaml.safe_dump({"models": rows}, sort_keys=False)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, p)


# -- model files ---------------------------------------------------------------

def _save_npz(path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    os.replace(tmp, path)


def add_slice_nets(dec_path: str | os.PathLike, net: IntCharm) -> None:
    """Add bitstream v3's slice networks to a v2 decoder file (written by save_model), making it a v3 model."""
    path = Path(dec_path)
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        arrays = {k: f[k] for k in f.files if k != "meta"}
    if net.latent_channels != meta["widths"]["latent_channels"]:
        raise ValueError(f"slice networks cover {net.latent_channels} channels, the model has "
                         f"{meta['widths']['latent_channels']}")
    cm, ca = net.to_arrays()
    arrays.update({f"charm_{k}": v for k, v in ca.items()})
    meta.update({"bitstream": SLICES_VERSION, "charm": cm})
    _save_npz(path, meta, arrays)


def load_slice_nets(dec_path: str | os.PathLike) -> IntCharm | None:
    """The slice networks of a decoder file, or None for a v2 model. The caller has checked its hash."""
    with np.load(dec_path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        if "charm" not in meta:
            return None
        arrays = {k[len("charm_"):]: f[k] for k in f.files if k.startswith("charm_")}
    return IntCharm.from_arrays(meta["charm"], arrays)


def bitstream_version(dec_path: str | os.PathLike) -> int:
    """The bitstream version a decoder file's model writes: 3 with slice networks, else 2."""
    with np.load(dec_path, allow_pickle=False) as f:
        return int(json.loads(str(f["meta"])).get("bitstream", 2))


def save_model(prefix: Path, widths: dict, synthesis: list[np.ndarray], intnet: IntHyperSynthesis,
               z_table: CdfTable, y_table: CdfTable, analysis: list[np.ndarray],
               hyper_analysis: list[np.ndarray], info: dict) -> str:
    """Write both files; returns the short hash of the decoder file."""
    hs_meta, hs_arrays = intnet.to_arrays()
    dec = {f"syn{i:03d}": w.astype(np.float16) for i, w in enumerate(synthesis)}
    dec.update(hs_arrays)
    for key, t in (("z", z_table), ("y", y_table)):
        dec.update({f"{key}_cdf": t.cdf, f"{key}_offset": t.offset, f"{key}_length": t.length})
    meta = {"format": FORMAT_VERSION, "widths": widths, "hyper_synthesis": hs_meta, "info": info}
    prefix = Path(prefix)
    _save_npz(prefix.with_name(prefix.name + ".dec.npz"), meta, dec)
    enc = {f"ana{i:03d}": w.astype(np.float16) for i, w in enumerate(analysis)}
    enc.update({f"hya{i:03d}": w.astype(np.float16) for i, w in enumerate(hyper_analysis)})
    _save_npz(prefix.with_name(prefix.name + ".enc.npz"), {"format": FORMAT_VERSION, "widths": widths}, enc)
    return file_hash(prefix.with_name(prefix.name + ".dec.npz"))


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        arrays = {k: f[k] for k in f.files if k != "meta"}
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported model file format {meta.get('format')}")
    return meta, arrays


def _ordered(arrays: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    keys = sorted(k for k in arrays if k.startswith(prefix) and k[len(prefix):].isdigit())
    return [arrays[k].astype(np.float32) for k in keys]


@dataclass
class DecoderModel:
    """Everything the decoder needs for one model; built lazily per stream."""

    entry: Entry
    widths: dict
    synthesis: Any                  # models.synthesis.Synthesis: plain TF ops, no Keras
    intnet: IntHyperSynthesis
    z_table: CdfTable
    y_table: CdfTable
    info: dict


def load_decoder_model(entry: Entry) -> DecoderModel:
    """The decoder half of one model. The synthesis is models.synthesis.Synthesis, the Keras
    SynthesisTransform's exact ops without building a Keras model, so that the decoder
    imports neither Keras nor tensorflow_compression's Python layers."""
    from models.synthesis import Synthesis
    actual = file_hash(entry.dec_path)
    if actual != entry.hash:
        raise ValueError(f"{entry.dec_path.name}: content hash {actual} does not match registry {entry.hash}")
    meta, arrays = _read(entry.dec_path)
    widths = meta["widths"]
    syn = Synthesis(_ordered(arrays, "syn"), widths["num_filters"], widths["latent_channels"])
    return DecoderModel(entry, widths, syn, IntHyperSynthesis.from_arrays(meta["hyper_synthesis"], arrays),
                        _table(arrays, "z"), _table(arrays, "y"), meta.get("info", {}))


class ModelStore:
    """A registry plus its decoder models and slice networks, each loaded on first use, once per process.

    The decoder's cache and the encoder's model set both build on it, so the encoder reconstructs with
    the very objects the decoder would load, without importing the decoder.
    """

    def __init__(self, registry: str | os.PathLike | None = None):
        self.registry = load_registry(registry)
        self.loaded: list[str] = []           # "<name>:<hash>" of each model file loaded, in order (the bench counts them)
        self._models: dict[str, DecoderModel] = {}
        self._slices: dict[str, Any] = {}

    def _load(self, entry: Entry) -> DecoderModel:
        return load_decoder_model(entry)

    def decoder_model(self, entry: Entry) -> DecoderModel:
        """Targets that share a model file share one load."""
        if entry.hash not in self._models:
            self._models[entry.hash] = self._load(entry)
            self.loaded.append(f"{entry.name}:{entry.hash}")
        return self._models[entry.hash]

    def slice_nets(self, entry: Entry):
        """Bitstream v3's integer slice networks (models.charm.IntCharm), or None for a v2 model."""
        if entry.hash not in self._slices:
            self.decoder_model(entry)                 # checks the file's hash first
            self._slices[entry.hash] = load_slice_nets(entry.dec_path)
        return self._slices[entry.hash]


def _table(arrays: dict[str, np.ndarray], key: str) -> CdfTable:
    t = CdfTable(arrays[f"{key}_cdf"].astype(np.int32), arrays[f"{key}_offset"].astype(np.int32),
                 arrays[f"{key}_length"].astype(np.int32))
    if np.any(t.length < 1) or int(t.length.sum()) + 2 * t.rows != t.cdf.size or np.any(t.cdf[:1] <= 0):
        raise ValueError(f"{key} CDF table is malformed")
    return t


def load_encoder_transforms(entry: Entry):
    """(analysis, hyper_analysis) Keras layers for one model."""
    from models.transforms import AnalysisTransform, HyperAnalysisTransform
    meta, arrays = _read(entry.enc_path)
    w = meta["widths"]
    ana = AnalysisTransform(w["num_filters"], w["latent_channels"])
    ana.build((None, None, None, 3))
    ana.set_weights(_ordered(arrays, "ana"))
    hya = HyperAnalysisTransform(w["num_filters"], w["num_filters"])
    hya.build((None, None, None, w["latent_channels"]))
    hya.set_weights(_ordered(arrays, "hya"))
    return ana, hya
