"""Readers for point-cloud and mesh files, without compiled extensions.

:func:`read_point_file` returns a dict with

- ``pos``: ``[V, 3]`` float32 vertex / point coordinates,
- ``faces``: ``[3, F]`` long triangles (polygons are fan-triangulated) or ``None`` for point clouds,
- ``normals``: ``[V, 3]`` float32 or ``None``,
- ``colors``: ``[V, 3]`` float32 in [0, 1] or ``None``,
- ``parts``: ``[V]`` long per-point part labels or ``None``.

Formats (by extension, case-insensitive):

- ``.off``: ``torch_geometric.io.read_off`` (ModelNet's files, including the ones whose first line is
  ``OFF<V> <F> 0``).
- ``.ply``: our own reader (PyG's needs openmesh): ``ascii``, ``binary_little_endian`` and
  ``binary_big_endian``; vertex properties ``x y z`` and optionally ``nx ny nz`` and
  ``red green blue`` (``uchar`` colours are divided by 255, float colours are kept); faces as
  ``list <count type> <index type> vertex_indices`` (or ``vertex_index``). Other elements are skipped.
- ``.npy``: an array ``[N, 3]`` (xyz) or ``[N, 6]`` (xyz + normals) or ``[N, 7]`` (+ part label).
- ``.xyz`` / ``.txt`` / ``.pts``: whitespace- or comma-separated columns: 3 (xyz), 6 (xyz + normals) or
  7 (ShapeNet's part files: xyz, normal, part label).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: file extensions :func:`read_point_file` understands
POINT_EXTENSIONS: tuple[str, ...] = (".off", ".ply", ".npy", ".xyz", ".txt", ".pts")

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def _record(path: Path, pos: Any, faces: Any = None, normals: Any = None, colors: Any = None,
            parts: Any = None) -> dict[str, Tensor | None]:
    pos_t = torch.as_tensor(np.asarray(pos, dtype=np.float32)).reshape(-1, 3)
    if pos_t.shape[0] == 0:
        raise ValueError(f"{path} is empty: it has no vertices/points. Remove the file or re-export it.")
    out: dict[str, Tensor | None] = {"pos": pos_t, "faces": None, "normals": None, "colors": None, "parts": None}
    if faces is not None:
        f = torch.as_tensor(faces).long()
        if f.numel():
            f = f.reshape(3, -1)
            if int(f.min()) < 0 or int(f.max()) >= pos_t.shape[0]:
                raise ValueError(f"{path}: a face refers to vertex {int(f.max())} but the file has {pos_t.shape[0]} vertices.")
            out["faces"] = f
    if normals is not None:
        out["normals"] = torch.as_tensor(np.asarray(normals, dtype=np.float32)).reshape(-1, 3)
    if colors is not None:
        out["colors"] = torch.as_tensor(np.asarray(colors, dtype=np.float32)).reshape(-1, 3)
    if parts is not None:
        out["parts"] = torch.as_tensor(np.asarray(parts)).reshape(-1).round().long() if np.asarray(parts).dtype.kind == "f" \
            else torch.as_tensor(np.asarray(parts)).reshape(-1).long()
    for key in ("pos", "normals", "colors"):
        value = out[key]
        if value is not None and not bool(torch.isfinite(value).all()):
            rows = (~torch.isfinite(value)).any(1).nonzero().flatten()
            raise ValueError(
                f"{path} has NaN/Inf {'coordinates' if key == 'pos' else key} in {rows.numel()} point(s) "
                f"(first rows {rows[:5].tolist()}). Remove those points or fix the export (e.g. drop NaN rows with "
                "numpy: a = a[np.isfinite(a).all(1)])."
            )
    return out


def _fan(polys: list[list[int]]) -> np.ndarray:
    tris = [(p[0], p[i], p[i + 1]) for p in polys for i in range(1, len(p) - 1)]
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3).T


# ---------------------------------------------------------------------------------------------- ply
def _ply_header(f: Any, path: Path) -> tuple[str, list[dict[str, Any]]]:
    if f.readline().strip() != b"ply":
        raise ValueError(f"{path} is not a PLY file (its first line is not 'ply').")
    fmt, elements = None, []
    while True:
        line = f.readline()
        if not line:
            raise ValueError(f"{path}: PLY header has no 'end_header'.")
        words = line.decode("ascii", errors="replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            break
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append({"name": words[1], "count": int(words[2]), "props": []})
        elif words[0] == "property":
            if not elements:
                raise ValueError(f"{path}: PLY property before any element.")
            if words[1] == "list":
                elements[-1]["props"].append((words[4], "list", words[2], words[3]))
            else:
                elements[-1]["props"].append((words[2], words[1], None, None))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"{path}: unsupported PLY format {fmt!r}; expected ascii, binary_little_endian or binary_big_endian.")
    for el in elements:
        for _, kind, a, b in el["props"]:
            for t in ([kind] if kind != "list" else [a, b]):
                if t not in _PLY_TYPES:
                    raise ValueError(f"{path}: unknown PLY property type {t!r}.")
    return fmt, elements


def _read_ply(path: Path) -> dict[str, Tensor | None]:
    with open(path, "rb") as f:
        fmt, elements = _ply_header(f, path)
        body = f.read()
    data: dict[str, dict[str, Any]] = {}
    if fmt == "ascii":
        tokens = body.split()
        pos = 0
        for el in elements:
            cols: dict[str, Any] = {p[0]: [] for p in el["props"]}
            has_list = any(p[1] == "list" for p in el["props"])
            if not has_list and el["props"]:
                k = len(el["props"])
                arr = np.asarray(tokens[pos:pos + k * el["count"]], dtype=np.float64).reshape(el["count"], k)
                pos += k * el["count"]
                cols = {p[0]: arr[:, i] for i, p in enumerate(el["props"])}
            else:
                for _ in range(el["count"]):
                    for name, kind, _, _ in el["props"]:
                        if kind == "list":
                            n = int(tokens[pos])
                            cols[name].append([int(t) for t in tokens[pos + 1:pos + 1 + n]])
                            pos += 1 + n
                        else:
                            cols[name].append(float(tokens[pos]))
                            pos += 1
            data[el["name"]] = cols
    else:
        end = "<" if fmt == "binary_little_endian" else ">"
        off = 0
        for el in elements:
            has_list = any(p[1] == "list" for p in el["props"])
            if not has_list:
                dt = np.dtype([(p[0], end + _PLY_TYPES[p[1]]) for p in el["props"]])
                arr = np.frombuffer(body, dtype=dt, count=el["count"], offset=off)
                off += dt.itemsize * el["count"]
                data[el["name"]] = {p[0]: arr[p[0]] for p in el["props"]}
                continue
            cols = {p[0]: [] for p in el["props"]}
            for _ in range(el["count"]):
                for name, kind, ct, it in el["props"]:
                    if kind == "list":
                        cdt = np.dtype(end + _PLY_TYPES[ct])
                        n = int(np.frombuffer(body, cdt, 1, off)[0])
                        off += cdt.itemsize
                        idt = np.dtype(end + _PLY_TYPES[it])
                        cols[name].append(np.frombuffer(body, idt, n, off).tolist())
                        off += idt.itemsize * n
                    else:
                        dt1 = np.dtype(end + _PLY_TYPES[kind])
                        cols[name].append(float(np.frombuffer(body, dt1, 1, off)[0]))
                        off += dt1.itemsize
            data[el["name"]] = cols
    vert = data.get("vertex")
    if vert is None or not all(k in vert for k in ("x", "y", "z")):
        if vert is not None and len(next(iter(vert.values()), [])) == 0:
            raise ValueError(f"{path} is empty: it has no vertices/points. Remove the file or re-export it.")
        raise ValueError(f"{path}: PLY file needs a 'vertex' element with x, y, z properties.")
    pos = np.stack([np.asarray(vert[k], dtype=np.float64) for k in ("x", "y", "z")], 1)
    normals = colors = faces = None
    if all(k in vert for k in ("nx", "ny", "nz")):
        normals = np.stack([np.asarray(vert[k], dtype=np.float64) for k in ("nx", "ny", "nz")], 1)
    ckeys = ("red", "green", "blue") if "red" in vert else ("r", "g", "b")
    if all(k in vert for k in ckeys):
        ctype = next(p[1] for el in elements if el["name"] == "vertex" for p in el["props"] if p[0] == ckeys[0])
        colors = np.stack([np.asarray(vert[k], dtype=np.float64) for k in ckeys], 1)
        if _PLY_TYPES[ctype] in ("u1", "i1"):
            colors = colors / 255.0
        elif _PLY_TYPES[ctype] in ("u2", "i2"):
            colors = colors / 65535.0
    face = data.get("face")
    if face is not None:
        key = "vertex_indices" if "vertex_indices" in face else ("vertex_index" if "vertex_index" in face else None)
        if key is not None and len(face[key]):
            faces = _fan([list(map(int, p)) for p in face[key]])
    parts = None
    for k in ("label", "part", "parts", "segment"):
        if k in vert:
            parts = np.asarray(vert[k])
            break
    return _record(path, pos, faces, normals, colors, parts)


# ---------------------------------------------------------------------------------------------- others
def _columns(path: Path, arr: np.ndarray) -> dict[str, Tensor | None]:
    if arr.ndim == 1 and arr.size in (3, 6, 7):
        arr = arr.reshape(1, -1)
    if arr.size == 0:
        raise ValueError(f"{path} is empty: it has no vertices/points. Remove the file or re-export it.")
    if arr.ndim != 2 or arr.shape[1] not in (3, 6, 7):
        raise ValueError(
            f"{path}: expected an array of shape [N, 3] (xyz), [N, 6] (xyz + normals) or [N, 7] (xyz, normal, part "
            f"label), got {list(arr.shape)}."
        )
    normals = arr[:, 3:6] if arr.shape[1] >= 6 else None
    parts = arr[:, 6] if arr.shape[1] == 7 else None
    return _record(path, arr[:, :3], None, normals, None, parts)


def _read_text(path: Path) -> dict[str, Tensor | None]:
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            rows.append([float(v) for v in re.split(r"[,\s]+", line) if v])
    if not rows:
        raise ValueError(f"{path} is empty: it has no vertices/points. Remove the file or re-export it.")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise ValueError(f"{path}: rows have different numbers of columns {sorted(widths)}; expected 3, 6 or 7 on every row.")
    return _columns(path, np.asarray(rows, dtype=np.float64))


def _read_off(path: Path) -> dict[str, Tensor | None]:
    from torch_geometric.io import read_off

    try:
        data = read_off(str(path))
    except (ValueError, IndexError, RuntimeError) as e:
        raise ValueError(f"{path} is not a readable OFF mesh ({e}); an empty or truncated file?") from e
    face = data.face if data.face is not None and data.face.numel() else None
    return _record(path, data.pos, face)


def read_point_file(path: str | os.PathLike) -> dict[str, Tensor | None]:
    """Read one point-cloud or mesh file into ``{"pos", "faces", "normals", "colors", "parts"}``.

    Raises:
        ValueError: unknown extension (the supported ones are listed), empty file, NaN/Inf values,
            malformed content; every message names the file.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in POINT_EXTENSIONS:
        raise ValueError(f"{p}: unsupported point-cloud file extension {ext or '(none)'!r}; supported: "
                         f"{', '.join(POINT_EXTENSIONS)}.")
    if ext == ".off":
        return _read_off(p)
    if ext == ".ply":
        return _read_ply(p)
    if ext == ".npy":
        return _columns(p, np.asarray(np.load(p, allow_pickle=False), dtype=np.float64))
    return _read_text(p)


__all__ = ["POINT_EXTENSIONS", "read_point_file"]
