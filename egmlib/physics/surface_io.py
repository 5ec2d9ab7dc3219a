"""Read triangle surfaces (for example a patient's segmented atria) from common file formats,
and repair the defects real meshes carry.

Formats (chosen by the file extension, case-insensitive):

* ``.vtk`` -- VTK legacy format, ``DATASET POLYDATA`` (``POLYGONS``) or
  ``DATASET UNSTRUCTURED_GRID`` (cell type 5, ``VTK_TRIANGLE``), ``ASCII`` or ``BINARY``. Binary
  data are big-endian, as the VTK file-format documentation ("VTK File Formats", section "Simple
  Legacy Formats", https://docs.vtk.org/en/latest/design_documents/VTKFileFormats.html) specifies.
  Both cell layouts are read: the classic one (``POLYGONS n size`` followed by ``size`` integers,
  each cell prefixed by its vertex count) and the one of file version 5.1 (``POLYGONS n_offsets
  n_connectivity`` followed by ``OFFSETS <type>`` and ``CONNECTIVITY <type>`` arrays). Parsed here
  (meshio 5.3 does not read binary POLYDATA, the usual export of clinical mapping systems).
* ``.vtp`` -- VTK XML PolyData (same documentation, section "XML File Formats"): ``ascii``,
  inline ``binary`` (base64, optionally ``vtkZLibDataCompressor`` / ``vtkLZMADataCompressor``
  compressed) and ``appended`` (``raw`` or ``base64``) data arrays. Parsed here (meshio 5.3 has
  no PolyData reader).
* ``.vtu`` (VTK XML UnstructuredGrid) and ``.ply`` (ASCII and binary; face property
  ``vertex_indices`` or ``vertex_index``) -- read through ``meshio`` (imported on first use).
* ``.obj`` (Wavefront; ``v`` and ``f`` records, ``f`` entries as ``i``, ``i/t``, ``i//n`` or
  ``i/t/n``, negative indices counting back from the last vertex) and ``.stl`` (ASCII and binary)
  -- parsed here: meshio 5.3 reads neither vertex colours (``v x y z r g b``) nor negative OBJ
  indices, and its STL reader reorders the vertices. STL stores each triangle's corners
  separately; corners with identical coordinates become one vertex, numbered in order of first
  appearance.
* openCARP ``.pts`` + ``.elem`` (+ optional ``.lon``), given as the ``.pts`` path, the ``.elem``
  path or their common stem. By openCARP convention (openCARP user manual, "File formats") node
  coordinates in ``.pts`` are in micrometres; they are converted to millimetres (``pts_unit_mm``,
  default 1e-3). ``.pts``: first line the node count, then ``x y z`` per line. ``.elem``: first
  line the element count, then ``Tr i j k [region]`` per line (0-based node indices); the region
  tag becomes cell data ``"region"``. ``.lon``: first line the number of directions per element
  (1: fibre; 2: fibre and sheet), then 3 or 6 numbers per element; kept as cell data ``"fibre"``
  (and ``"sheet"``).

Only triangles are read: any other cell (vertex, line, quad, polygon, triangle strip, tetrahedron,
...) raises :class:`SurfaceFileError` naming what was found. So do a missing file, an unknown
extension, non-finite coordinates, vertex indices out of range and truncated data; every message
names the file.

:func:`clean_surface` repairs what real meshes carry (a clinical left atrium had a 62-vertex
fragment beside its main surface, 0.03 mm edges and 177-degree slivers): duplicate vertices, unused
vertices, duplicate and degenerate faces, disconnected fragments and inconsistently oriented faces.
:func:`read_surface` applies it by default.
"""

from __future__ import annotations

import base64
import io
import lzma
import re
import warnings
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

from egmlib.physics.geometry import MeshError, TriMesh

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "CleanReport",
    "SurfaceCleanWarning",
    "SurfaceFileError",
    "clean_surface",
    "read_surface",
    "read_surface_data",
]

#: File extensions :func:`read_surface` understands (plus an openCARP stem without extension).
SUPPORTED_EXTENSIONS = (".vtk", ".vtp", ".vtu", ".obj", ".ply", ".stl", ".pts", ".elem")

#: Default tolerance (mm) under which two vertices count as one in :func:`clean_surface`.
MERGE_TOL_MM = 1e-6

CellData = dict[str, NDArray]


class SurfaceFileError(MeshError):
    """A surface file is missing, of an unknown format, malformed, or not a triangle surface.

    A :class:`~egmlib.physics.geometry.MeshError` and so a ``ValueError``.
    """


class SurfaceCleanWarning(UserWarning):
    """:func:`clean_surface` removed or re-oriented something."""


def _err(path: Path | str, msg: str) -> SurfaceFileError:
    return SurfaceFileError(f"{path}: {msg}")


# ---------------------------------------------------------------------------------------------
# public readers
# ---------------------------------------------------------------------------------------------
def read_surface_data(path: str | Path, *, pts_unit_mm: float = 1e-3
                      ) -> tuple[NDArray[np.float64], NDArray[np.int64], CellData]:
    """Read a triangle surface file as raw arrays, without repairing it.

    Args:
        path: the file (see the module docstring for the formats); for openCARP the ``.pts``,
            the ``.elem`` or their common stem.
        pts_unit_mm: length of one openCARP ``.pts`` unit in mm (1e-3: micrometres).

    Returns:
        ``(vertices, faces, cell_data)``: vertices (n, 3) float64, faces (m, 3) int64 with
        indices in ``[0, n)``, and per-face arrays (first axis m) such as region tags or fibre
        directions, in face order. Coordinates are finite and indices in range; the mesh may
        still hold duplicate, degenerate or unused elements (see :func:`clean_surface`).

    Raises:
        SurfaceFileError: see the module docstring.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".pts", ".elem") or (not p.exists() and p.with_name(p.name + ".pts").exists()):
        return _read_carp(p, pts_unit_mm)
    if not p.is_file():
        raise _err(p, "no such file")
    if suffix not in SUPPORTED_EXTENSIONS:
        raise _err(p, f"unknown surface format {suffix or '(no extension)'!r}; supported: "
                      f"{', '.join(SUPPORTED_EXTENSIONS)} (or an openCARP .pts/.elem stem)")
    reader = {".vtk": _read_vtk_legacy, ".vtp": _read_vtp, ".vtu": _read_meshio,
              ".ply": _read_meshio, ".obj": _read_obj, ".stl": _read_stl}[suffix]
    try:
        points, faces, cell_data = reader(p)
    except SurfaceFileError:
        raise
    except (ValueError, IndexError, KeyError, EOFError, OSError, ET.ParseError, zlib.error,
            lzma.LZMAError) as exc:
        raise _err(p, f"malformed or truncated file ({type(exc).__name__}: {exc})") from exc
    return _check(p, points, faces, cell_data)


def read_surface(path: str | Path, clean: bool = True, *, merge_tol_mm: float = MERGE_TOL_MM,
                 pts_unit_mm: float = 1e-3) -> TriMesh:
    """Read a triangle surface file (see the module docstring) as a :class:`TriMesh` in mm.

    Args:
        path: the file; for openCARP the ``.pts``, the ``.elem`` or their common stem.
        clean: repair the mesh with :func:`clean_surface` (which warns with a summary when it
            changed anything). With ``clean=False`` a mesh that :class:`TriMesh` rejects
            (degenerate faces, unused vertices) raises :class:`SurfaceFileError`.
        merge_tol_mm: vertex merge tolerance of :func:`clean_surface`.
        pts_unit_mm: length of one openCARP ``.pts`` unit in mm (1e-3: micrometres).
    """
    vertices, faces, _ = read_surface_data(path, pts_unit_mm=pts_unit_mm)
    if clean:
        try:
            mesh, _report = clean_surface((vertices, faces), merge_tol_mm=merge_tol_mm,
                                          source=str(path), stacklevel=3)
        except MeshError as exc:
            raise _err(path, str(exc)) from exc
        return mesh
    try:
        return TriMesh(vertices, faces)
    except MeshError as exc:
        raise _err(path, f"{exc} (read with clean=True to repair it)") from exc


def _check(path: Path, points: ArrayLike, faces: ArrayLike, cell_data: CellData
           ) -> tuple[NDArray[np.float64], NDArray[np.int64], CellData]:
    """Common checks of every reader's output."""
    v = np.asarray(points, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise _err(path, f"points must be 3-D coordinates; got an array of shape {v.shape}")
    f = np.asarray(faces)
    if f.size == 0:
        raise _err(path, "no triangles found")
    f = f.astype(np.int64).reshape(-1, 3)
    bad = ~np.isfinite(v).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _err(path, f"{int(bad.sum())} vertices have non-finite coordinates "
                         f"(first: vertex {i} = {v[i].tolist()})")
    if f.min() < 0 or f.max() >= len(v):
        i = int(np.flatnonzero((f < 0).any(axis=1) | (f >= len(v)).any(axis=1))[0])
        raise _err(path, f"vertex index out of range: face {i} is {f[i].tolist()} but there are "
                         f"{len(v)} vertices (valid indices 0..{len(v) - 1})")
    out = {}
    for name, arr in cell_data.items():
        a = np.asarray(arr)
        if a.ndim >= 1 and len(a) == len(f):
            out[name] = a
    return v, f, out


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in counts.items() if n)


def _only_triangles(path: Path, found: dict[str, int]) -> None:
    """Raise when cells other than triangles were found (``found``: kind -> count)."""
    others = {k: n for k, n in found.items() if k != "triangle" and n}
    if others:
        raise _err(path, f"only triangle surfaces can be read; found {_describe(found)} cells")
    if not found.get("triangle"):
        raise _err(path, "no triangles found")


def _polygon_kind(size: int) -> str:
    return {1: "vertex", 2: "line", 3: "triangle", 4: "quad"}.get(size, f"{size}-gon")


# ---------------------------------------------------------------------------------------------
# VTK legacy
# ---------------------------------------------------------------------------------------------
_VTK_TYPES = {"unsigned_char": "u1", "char": "i1", "unsigned_short": "u2", "short": "i2",
              "unsigned_int": "u4", "int": "i4", "unsigned_long": "u8", "long": "i8",
              "float": "f4", "double": "f8", "vtktypeint64": "i8", "vtktypeuint64": "u8",
              "vtktypeint32": "i4", "vtktypeuint32": "u4", "vtkidtype": "i4"}

#: VTK cell type codes (vtkCellType.h) for messages.
_VTK_CELL_NAMES = {1: "vertex", 2: "poly-vertex", 3: "line", 4: "poly-line", 5: "triangle",
                   6: "triangle-strip", 7: "polygon", 8: "pixel", 9: "quad", 10: "tetrahedron",
                   11: "voxel", 12: "hexahedron", 13: "wedge", 14: "pyramid",
                   21: "quadratic-edge", 22: "quadratic-triangle", 23: "quadratic-quad",
                   24: "quadratic-tetrahedron", 25: "quadratic-hexahedron"}


class _LegacyReader:
    """A cursor over a VTK legacy file's bytes (keyword lines, ASCII tokens, binary blocks)."""

    def __init__(self, path: Path, buf: bytes) -> None:
        self.path, self.buf, self.pos, self.binary = path, buf, 0, False

    def raw_line(self) -> str | None:
        if self.pos >= len(self.buf):
            return None
        end = self.buf.find(b"\n", self.pos)
        end = len(self.buf) if end < 0 else end
        line = self.buf[self.pos:end].decode("latin-1").strip()
        self.pos = end + 1
        return line

    def line(self) -> str | None:
        """The next non-blank line, stripped (None at the end of the file)."""
        while True:
            line = self.raw_line()
            if line is None or line:
                return line

    def peek(self) -> str | None:
        pos = self.pos
        line = self.line()
        self.pos = pos
        return line

    def array(self, count: int, vtk_type: str, what: str) -> NDArray:
        """``count`` values of VTK type ``vtk_type`` (big-endian when binary)."""
        code = _VTK_TYPES.get(vtk_type.lower())
        if code is None:
            raise _err(self.path, f"unsupported data type {vtk_type!r} for {what}")
        if count < 0:
            raise _err(self.path, f"negative count for {what}")
        if self.binary:
            dt = np.dtype(">" + code)
            nbytes = count * dt.itemsize
            if self.pos + nbytes > len(self.buf):
                raise _err(self.path, f"truncated binary data: {what} needs {nbytes} bytes, "
                                      f"{len(self.buf) - self.pos} remain")
            out = np.frombuffer(self.buf, dt, count, offset=self.pos)
            self.pos += nbytes
            if self.buf[self.pos:self.pos + 1] == b"\r":
                self.pos += 1
            if self.buf[self.pos:self.pos + 1] == b"\n":
                self.pos += 1
            return out.astype(dt.newbyteorder("="))
        if count == 0:
            return np.zeros(0, np.dtype(code))
        tokens = self.buf[self.pos:].split(None, count)
        rest = tokens[count] if len(tokens) > count else b""
        tokens = tokens[:count]
        if len(tokens) < count:
            raise _err(self.path, f"truncated data: {what} needs {count} values, "
                                  f"{len(tokens)} remain")
        self.pos = len(self.buf) - len(rest)
        try:
            text = np.asarray(tokens, dtype="S")
            out = text.astype(np.float64 if code[0] == "f" else np.int64)
        except ValueError as exc:
            raise _err(self.path, f"non-numeric value in {what} ({exc})") from exc
        return out


def _legacy_cells(r: _LegacyReader, words: list[str], what: str
                  ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Read a cell section (classic or 5.1 layout); returns (offsets (n+1,), connectivity)."""
    if len(words) < 3:
        raise _err(r.path, f"malformed {what} line {' '.join(words)!r}")
    a, b = int(words[1]), int(words[2])
    nxt = r.peek()
    if nxt is not None and nxt.upper().startswith("OFFSETS"):  # VTK 5.1 layout
        r.line()
        offsets = r.array(a, nxt.split()[1] if len(nxt.split()) > 1 else "vtktypeint64",
                          f"{what} OFFSETS").astype(np.int64)
        line = r.line() or ""
        if not line.upper().startswith("CONNECTIVITY"):
            raise _err(r.path, f"expected CONNECTIVITY after {what} OFFSETS, got {line!r}")
        conn = r.array(b, line.split()[1] if len(line.split()) > 1 else "vtktypeint64",
                       f"{what} CONNECTIVITY").astype(np.int64)
        if a == 0:
            offsets = np.zeros(1, np.int64)
        if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != len(conn):
            raise _err(r.path, f"{what} OFFSETS are inconsistent with CONNECTIVITY")
        return offsets, conn
    data = r.array(b, "int", what).astype(np.int64)  # classic: count-prefixed cells
    if a and b == 4 * a and np.all(data[::4] == 3):
        blocks = data.reshape(a, 4)
        return np.arange(0, 3 * a + 1, 3, dtype=np.int64), blocks[:, 1:].ravel()
    offsets = np.zeros(a + 1, np.int64)
    starts = np.zeros(a, np.int64)
    pos = 0
    for k in range(a):
        if pos >= len(data) or data[pos] < 0:
            raise _err(r.path, f"{what}: cell {k} runs past the {b} listed integers")
        starts[k] = pos + 1
        offsets[k + 1] = offsets[k] + data[pos]
        pos += 1 + int(data[pos])
    if pos != len(data):
        raise _err(r.path, f"{what}: the cells use {pos} integers, the header says {b}")
    take = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, np.diff(offsets))]) \
        if a else np.zeros(0, np.int64)
    return offsets, data[take.astype(np.int64)]


def _legacy_attributes(r: _LegacyReader, words: list[str], count: int, store: CellData) -> None:
    """Read one dataset attribute (SCALARS, VECTORS, FIELD, ...) of ``count`` tuples."""
    key = words[0].upper()
    name = words[1] if len(words) > 1 else key.lower()
    if key == "SCALARS":
        ncomp = int(words[3]) if len(words) > 3 else 1
        nxt = r.peek()
        if nxt is not None and nxt.upper().startswith("LOOKUP_TABLE"):
            r.line()
        store[name] = r.array(count * ncomp, words[2], f"SCALARS {name}").reshape(
            (count, ncomp) if ncomp > 1 else (count,))
    elif key == "COLOR_SCALARS":
        n = int(words[2])
        arr = r.array(count * n, "unsigned_char" if r.binary else "float", f"COLOR_SCALARS {name}")
        store[name] = arr.reshape(count, n)
    elif key == "LOOKUP_TABLE":
        n = int(words[2])
        r.array(4 * n, "unsigned_char" if r.binary else "float", f"LOOKUP_TABLE {name}")
    elif key in ("VECTORS", "NORMALS"):
        store[name] = r.array(3 * count, words[2], f"{key} {name}").reshape(count, 3)
    elif key in ("TENSORS", "TENSORS6"):
        k = 9 if key == "TENSORS" else 6
        store[name] = r.array(k * count, words[2], f"{key} {name}").reshape(count, k)
    elif key == "TEXTURE_COORDINATES":
        dim = int(words[2])
        store[name] = r.array(dim * count, words[3], f"{key} {name}").reshape(count, dim)
    elif key in ("GLOBAL_IDS", "PEDIGREE_IDS"):
        store[name] = r.array(count, words[2], f"{key} {name}")
    elif key == "FIELD":
        for _ in range(int(words[2])):
            line = r.line()
            parts = (line or "").split()
            if len(parts) < 4:
                raise _err(r.path, f"malformed FIELD array line {line!r}")
            ncomp, ntup = int(parts[1]), int(parts[2])
            arr = r.array(ncomp * ntup, parts[3], f"FIELD array {parts[0]}")
            if ntup == count:
                store[parts[0]] = arr.reshape((ntup, ncomp) if ncomp > 1 else (ntup,))
    else:
        raise _err(r.path, f"unknown keyword {words[0]!r}")


def _read_vtk_legacy(path: Path) -> tuple[NDArray, NDArray, CellData]:
    r = _LegacyReader(path, path.read_bytes())
    first = r.raw_line() or ""
    if not first.lower().startswith("# vtk datafile version"):
        raise _err(path, "not a VTK legacy file (the first line must be "
                         "'# vtk DataFile Version x.y')")
    r.raw_line()  # title
    fmt = (r.line() or "").upper()
    if fmt not in ("ASCII", "BINARY"):
        raise _err(path, f"the third line must be ASCII or BINARY; got {fmt!r}")
    r.binary = fmt == "BINARY"
    ds = (r.line() or "").split()
    if len(ds) < 2 or ds[0].upper() != "DATASET":
        raise _err(path, "missing DATASET line")
    dataset = ds[1].upper()
    if dataset not in ("POLYDATA", "UNSTRUCTURED_GRID"):
        raise _err(path, f"DATASET {dataset} is not a surface; only POLYDATA and "
                         "UNSTRUCTURED_GRID are read")
    points = None
    poly: dict[str, tuple[NDArray, NDArray]] = {}
    cell_types = None
    cell_data: CellData = {}
    point_data: CellData = {}
    target, target_count = None, 0
    while (line := r.line()) is not None:
        words = line.split()
        key = words[0].upper()
        if key == "POINTS":
            n = int(words[1])
            points = r.array(3 * n, words[2], "POINTS").reshape(n, 3)
        elif key in ("VERTICES", "LINES", "POLYGONS", "TRIANGLE_STRIPS", "CELLS"):
            poly[key] = _legacy_cells(r, words, key)
        elif key == "CELL_TYPES":
            cell_types = r.array(int(words[1]), "int", "CELL_TYPES").astype(np.int64)
        elif key == "METADATA":
            while (raw := r.raw_line()) is not None and raw:
                pass
        elif key in ("CELL_DATA", "POINT_DATA"):
            target = cell_data if key == "CELL_DATA" else point_data
            target_count = int(words[1])
        elif key == "FIELD" and target is None:  # dataset-level field data (e.g. TIME)
            _legacy_attributes(r, words, -1, {})
        elif target is not None:
            _legacy_attributes(r, words, target_count, target)
        else:
            raise _err(path, f"unexpected keyword {words[0]!r}")
    if points is None:
        raise _err(path, "no POINTS section")
    found: dict[str, int] = {}
    if dataset == "POLYDATA":
        if "CELLS" in poly:
            raise _err(path, "CELLS section in a POLYDATA dataset")
        for key, kind in (("VERTICES", "vertex"), ("LINES", "line"),
                          ("TRIANGLE_STRIPS", "triangle-strip")):
            if key in poly:
                found[kind] = len(poly[key][0]) - 1
        offsets, conn = poly.get("POLYGONS", (np.zeros(1, np.int64), np.zeros(0, np.int64)))
    else:
        if "CELLS" not in poly:
            raise _err(path, "UNSTRUCTURED_GRID without a CELLS section")
        offsets, conn = poly["CELLS"]
        if cell_types is None or len(cell_types) != len(offsets) - 1:
            raise _err(path, "CELL_TYPES missing or not one per cell")
        for t, n in zip(*np.unique(cell_types[cell_types != 5], return_counts=True)):
            found[_VTK_CELL_NAMES.get(int(t), f"type-{int(t)}")] = int(n)
    sizes = np.diff(offsets)
    if dataset == "POLYDATA":
        for s, n in zip(*np.unique(sizes, return_counts=True)):
            kind = _polygon_kind(int(s))
            found[kind] = found.get(kind, 0) + int(n)
    else:
        found["triangle"] = int(np.sum(cell_types == 5))
        if np.any((cell_types == 5) & (sizes != 3)):
            raise _err(path, "a triangle cell (type 5) does not have 3 vertices")
    _only_triangles(path, found)
    return points, conn.reshape(-1, 3), cell_data


# ---------------------------------------------------------------------------------------------
# VTK XML PolyData
# ---------------------------------------------------------------------------------------------
_XML_TYPES = {"Int8": "i1", "UInt8": "u1", "Int16": "i2", "UInt16": "u2", "Int32": "i4",
              "UInt32": "u4", "Int64": "i8", "UInt64": "u8", "Float32": "f4", "Float64": "f8"}


def _b64_chars(nbytes: int) -> int:
    return 4 * ((nbytes + 2) // 3)


class _XmlReader:
    """Decodes the DataArrays of one VTK XML file."""

    def __init__(self, path: Path, root: ET.Element, appended: bytes | None,
                 appended_encoding: str) -> None:
        self.path = path
        order = "<" if root.get("byte_order", "LittleEndian") == "LittleEndian" else ">"
        self.order = order
        self.header = np.dtype(order + _XML_TYPES[root.get("header_type", "UInt32")])
        self.compressor = root.get("compressor")
        self.appended = appended
        self.appended_encoding = appended_encoding

    def _decompress(self, blocks: bytes) -> bytes:
        if self.compressor == "vtkZLibDataCompressor":
            return zlib.decompress(blocks)
        if self.compressor == "vtkLZMADataCompressor":
            return lzma.decompress(blocks)
        raise _err(self.path, f"unsupported compressor {self.compressor!r}")

    def _from_raw(self, buf: bytes, start: int) -> bytes:
        """The bytes of one array stored raw at ``buf[start:]`` (header, then data)."""
        h = self.header.itemsize
        if self.compressor is None:
            if start + h > len(buf):
                raise _err(self.path, "truncated appended data")
            n = int(np.frombuffer(buf, self.header, 1, start)[0])
            if start + h + n > len(buf):
                raise _err(self.path, "truncated appended data")
            return buf[start + h:start + h + n]
        nb = int(np.frombuffer(buf, self.header, 1, start)[0])
        head = np.frombuffer(buf, self.header, 3 + nb, start).astype(np.int64)
        return self._blocks(buf, start + h * (3 + nb), head[3:], "appended data")

    def _blocks(self, buf: bytes, pos: int, sizes: NDArray[np.int64], what: str) -> bytes:
        """The decompressed, joined blocks of ``sizes`` bytes each that start at ``pos``."""
        out = []
        for size in sizes:
            if pos + size > len(buf):
                raise _err(self.path, f"truncated {what}")
            out.append(self._decompress(buf[pos:pos + size]))
            pos += size
        return b"".join(out)

    def _from_b64(self, text: bytes) -> bytes:
        """The bytes of one base64 array (header encoded with or apart from the data)."""
        h = self.header.itemsize
        text = b"".join(text.split())
        if self.compressor is None:
            hc = _b64_chars(h)
            n = int(np.frombuffer(base64.b64decode(text[:hc])[:h], self.header, 1)[0])
            if text[hc - 1:hc] != b"=":  # header and data encoded together
                joint = base64.b64decode(text[:_b64_chars(h + n)])
                if len(joint) < h + n:
                    raise _err(self.path, "truncated base64 data array")
                return joint[h:h + n]
            data = base64.b64decode(text[_b64_chars(h):_b64_chars(h) + _b64_chars(n)])
            if len(data) < n:
                raise _err(self.path, "truncated base64 data array")
            return data[:n]
        first = base64.b64decode(text[:_b64_chars(h)])
        nb = int(np.frombuffer(first[:h], self.header, 1)[0])
        nhead = h * (3 + nb)
        head = np.frombuffer(base64.b64decode(text[:_b64_chars(nhead)])[:nhead],
                             self.header).astype(np.int64)
        body = base64.b64decode(text[_b64_chars(nhead):
                                     _b64_chars(nhead) + _b64_chars(int(head[3:].sum()))])
        return self._blocks(body, 0, head[3:], "base64 data array")

    def array(self, el: ET.Element) -> NDArray:
        name = el.get("Name", "?")
        dtype = np.dtype(self.order + _XML_TYPES[el.get("type", "Float32")])
        fmt = el.get("format", "ascii")
        if fmt == "ascii":
            text = (el.text or "").split()
            out = np.asarray(text, dtype="S").astype(np.float64 if dtype.kind == "f"
                                                     else np.int64)
        else:
            if fmt == "binary":
                raw = self._from_b64((el.text or "").encode("ascii"))
            elif fmt == "appended":
                if self.appended is None:
                    raise _err(self.path, f"DataArray {name} is appended but there is no "
                                          "AppendedData")
                off = int(el.get("offset", "0"))
                if self.appended_encoding == "raw":
                    raw = self._from_raw(self.appended, off)
                else:
                    raw = self._from_b64(self.appended[off:])
            else:
                raise _err(self.path, f"unknown DataArray format {fmt!r}")
            if len(raw) % dtype.itemsize:
                raise _err(self.path, f"DataArray {name}: truncated data")
            out = np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))
        ncomp = int(el.get("NumberOfComponents", "1"))
        if ncomp > 1:
            if out.size % ncomp:
                raise _err(self.path, f"DataArray {name}: {out.size} values do not split into "
                                      f"{ncomp} components")
            out = out.reshape(-1, ncomp)
        return out


def _read_vtp(path: Path) -> tuple[NDArray, NDArray, CellData]:
    buf = path.read_bytes()
    appended, encoding = None, "raw"
    start = buf.find(b"<AppendedData")
    if start >= 0:  # raw appended bytes are not XML: cut them out before parsing
        tag_end = buf.find(b">", start)
        m = re.search(rb'encoding\s*=\s*"(\w+)"', buf[start:tag_end])
        encoding = m.group(1).decode() if m else "raw"
        under = buf.find(b"_", tag_end)
        stop = buf.rfind(b"</AppendedData>")
        if under < 0 or stop < 0:
            raise _err(path, "truncated or malformed AppendedData section (no '_' marker or "
                             "no closing </AppendedData>)")
        appended = buf[under + 1:stop]
        buf = buf[:tag_end + 1] + buf[stop:]
    root = ET.fromstring(buf)
    if root.tag != "VTKFile" or root.get("type") != "PolyData":
        raise _err(path, f"not a VTK XML PolyData file (VTKFile type={root.get('type')!r})")
    r = _XmlReader(path, root, appended, encoding)
    pts_all, faces_all, data_all = [], [], []
    found: dict[str, int] = {}
    offset = 0
    for piece in root.iter("Piece"):
        n_pts = int(piece.get("NumberOfPoints", "0"))
        pts_el = piece.find("Points/DataArray")
        if pts_el is None:
            raise _err(path, "a Piece has no Points")
        pts = r.array(pts_el).reshape(-1, 3)
        if len(pts) != n_pts:
            raise _err(path, f"a Piece declares {n_pts} points but holds {len(pts)}")
        for tag, kind in (("Verts", "vertex"), ("Lines", "line"), ("Strips", "triangle-strip")):
            n = int(piece.get(f"NumberOf{tag}", "0"))
            found[kind] = found.get(kind, 0) + n
        n_polys = int(piece.get("NumberOfPolys", "0"))
        conn = offs = np.zeros(0, np.int64)
        polys = piece.find("Polys")
        if n_polys and polys is not None:
            arrays = {a.get("Name"): a for a in polys.findall("DataArray")}
            if "connectivity" not in arrays or "offsets" not in arrays:
                raise _err(path, "Polys needs connectivity and offsets arrays")
            conn = r.array(arrays["connectivity"]).astype(np.int64).ravel()
            offs = r.array(arrays["offsets"]).astype(np.int64).ravel()
            if len(offs) != n_polys or np.any(np.diff(offs) < 0) or (n_polys and
                                                                     offs[-1] != len(conn)):
                raise _err(path, "Polys offsets are inconsistent with connectivity")
        sizes = np.diff(np.concatenate([[0], offs]))
        for s, n in zip(*np.unique(sizes, return_counts=True)):
            kind = _polygon_kind(int(s))
            found[kind] = found.get(kind, 0) + int(n)
        cd: CellData = {}
        cell_el = piece.find("CellData")
        if cell_el is not None:
            for a in cell_el.findall("DataArray"):
                arr = r.array(a)
                if len(arr) == n_polys:
                    cd[a.get("Name", "?")] = arr
        pts_all.append(pts)
        faces_all.append(conn + offset)
        data_all.append(cd)
        offset += n_pts
    _only_triangles(path, found)
    names = set.intersection(*(set(d) for d in data_all)) if data_all else set()
    cell_data = {k: np.concatenate([d[k] for d in data_all]) for k in sorted(names)}
    return np.concatenate(pts_all), np.concatenate(faces_all).reshape(-1, 3), cell_data


# ---------------------------------------------------------------------------------------------
# meshio (VTU, PLY)
# ---------------------------------------------------------------------------------------------
def _read_meshio(path: Path) -> tuple[NDArray, NDArray, CellData]:
    try:
        import meshio
    except ImportError as exc:  # pragma: no cover - meshio is a dependency
        raise _err(path, "reading this format needs the 'meshio' package") from exc
    source: Path | io.BytesIO = path
    if path.suffix.lower() == ".ply":
        raw = path.read_bytes()
        end = raw.find(b"end_header")
        head = raw[:end] if end >= 0 else b""
        if re.search(rb"vertex_index\s", head):  # meshio knows only 'vertex_indices'
            head = re.sub(rb"vertex_index(\s)", rb"vertex_indices\1", head)
            source = io.BytesIO(head + raw[end:])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mesh = meshio.read(source, file_format=path.suffix.lower()[1:])
    except Exception as exc:
        raise _err(path, f"malformed or truncated file (meshio: {type(exc).__name__}: "
                         f"{exc})") from exc
    found: dict[str, int] = {}
    for block in mesh.cells:
        kind = block.type
        if kind == "polygon":
            kind = _polygon_kind(block.data.shape[1])
        found[kind] = found.get(kind, 0) + len(block.data)
    _only_triangles(path, found)
    faces = np.concatenate([b.data for b in mesh.cells])
    cell_data = {k: np.concatenate(v) for k, v in mesh.cell_data.items()}
    points = np.asarray(mesh.points, np.float64)
    if points.ndim == 2 and points.shape[1] == 2:
        raise _err(path, "points are 2-D; a surface needs 3-D coordinates")
    return points, faces, cell_data


# ---------------------------------------------------------------------------------------------
# OBJ and STL
# ---------------------------------------------------------------------------------------------
def _read_obj(path: Path) -> tuple[NDArray, NDArray, CellData]:
    verts: list[list[float]] = []
    faces: list[list[int]] = []
    found: dict[str, int] = {"triangle": 0}
    with open(path, encoding="latin-1") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                if len(parts) < 4:
                    raise _err(path, f"line {lineno}: a vertex needs 3 coordinates")
                verts.append([float(x) for x in parts[1:4]])
            elif parts[0] == "f":
                idx = []
                for item in parts[1:]:
                    i = int(item.split("/")[0])
                    idx.append(i - 1 if i > 0 else len(verts) + i)
                kind = _polygon_kind(len(idx))
                found[kind] = found.get(kind, 0) + 1
                if len(idx) == 3:
                    faces.append(idx)
            elif parts[0] == "l":
                found["line"] = found.get("line", 0) + 1
    _only_triangles(path, found)
    return np.asarray(verts, np.float64).reshape(-1, 3), np.asarray(faces, np.int64), {}


def _merge_exact(corners: NDArray) -> tuple[NDArray, NDArray]:
    """Unique corners numbered by first appearance, and the faces indexing them."""
    c = np.ascontiguousarray(corners.reshape(-1, 3), dtype=np.float64)
    _, first, inverse = np.unique(c, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return c[first[order]], rank[inverse.ravel()].reshape(-1, 3)


def _read_stl(path: Path) -> tuple[NDArray, NDArray, CellData]:
    buf = path.read_bytes()
    size = len(buf)
    n = int(np.frombuffer(buf, "<u4", 1, 80)[0]) if size >= 84 else -1
    if n >= 0 and size == 84 + 50 * n:
        rec = np.dtype([("normal", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])
        tri = np.frombuffer(buf, rec, n, 84)["v"]
        if n == 0:
            raise _err(path, "no triangles found")
        v, f = _merge_exact(tri)
        return v, f, {}
    if buf.lstrip()[:5].lower() != b"solid":
        if n >= 0:
            raise _err(path, f"truncated binary STL: the header lists {n} triangles "
                             f"({84 + 50 * n} bytes) but the file has {size} bytes")
        raise _err(path, "neither an ASCII STL (starting 'solid') nor a binary STL")
    text = buf.decode("latin-1")
    nums = re.findall(r"^\s*vertex\s+(\S+)\s+(\S+)\s+(\S+)", text, flags=re.M | re.I)
    n_facets = len(re.findall(r"^\s*endloop", text, flags=re.M | re.I))
    if not nums:
        if n >= 0 and b"\0" in buf:
            raise _err(path, f"truncated binary STL: the header lists {n} triangles "
                             f"({84 + 50 * n} bytes) but the file has {size} bytes")
        raise _err(path, "no triangles found")
    if len(nums) != 3 * n_facets:
        raise _err(path, f"ASCII STL: {len(nums)} vertex lines for {n_facets} facets; "
                         "only triangles (3 vertices per facet) are read")
    v, f = _merge_exact(np.asarray(nums, dtype=np.float64))
    return v, f, {}


# ---------------------------------------------------------------------------------------------
# openCARP
# ---------------------------------------------------------------------------------------------
_CARP_TYPES = {"Tr": ("triangle", 3), "Qd": ("quad", 4), "Tt": ("tetrahedron", 4),
               "Ln": ("line", 2), "Hx": ("hexahedron", 8), "Py": ("pyramid", 5),
               "Pr": ("prism", 6)}


def _carp_paths(p: Path) -> tuple[Path, Path, Path]:
    stem = p.with_suffix("") if p.suffix.lower() in (".pts", ".elem") else p
    pts = stem.with_name(stem.name + ".pts")
    return pts, stem.with_name(stem.name + ".elem"), stem.with_name(stem.name + ".lon")


def _carp_table(path: Path) -> tuple[int, list[str]]:
    """The count on the first line and the remaining non-blank lines of an openCARP file."""
    if not path.is_file():
        raise _err(path, "no such file")
    lines = [ln for ln in path.read_text(encoding="latin-1").splitlines() if ln.strip()]
    if not lines:
        raise _err(path, "empty file")
    try:
        n = int(lines[0].split()[0])
    except ValueError as exc:
        raise _err(path, f"the first line must be the count; got {lines[0]!r}") from exc
    if len(lines) - 1 < n:
        raise _err(path, f"truncated: the header lists {n} entries, {len(lines) - 1} found")
    return n, lines[1:n + 1]


def _read_carp(p: Path, unit_mm: float) -> tuple[NDArray, NDArray, CellData]:
    pts_path, elem_path, lon_path = _carp_paths(p)
    _, rows = _carp_table(pts_path)
    try:
        pts = np.asarray([r.split()[:3] for r in rows], dtype=np.float64) * unit_mm
    except ValueError as exc:
        raise _err(pts_path, f"malformed coordinates ({exc})") from exc
    _, rows = _carp_table(elem_path)
    found: dict[str, int] = {}
    faces, tags = [], []
    for k, row in enumerate(rows):
        parts = row.split()
        kind = _CARP_TYPES.get(parts[0], (parts[0], 0))[0]
        found[kind] = found.get(kind, 0) + 1
        if parts[0] == "Tr":
            if len(parts) < 4:
                raise _err(elem_path, f"element {k}: 'Tr' needs 3 node indices")
            faces.append([int(x) for x in parts[1:4]])
            tags.append(int(parts[4]) if len(parts) > 4 else 0)
    _only_triangles(elem_path, found)
    cell_data: CellData = {"region": np.asarray(tags, np.int64)}
    if lon_path.is_file():
        words = lon_path.read_text(encoding="latin-1").split()
        ndir = int(words[0])
        vals = np.asarray(words[1:], np.float64)
        if ndir not in (1, 2) or vals.size != 3 * ndir * len(faces):
            raise _err(lon_path, f"expected {3 * ndir * len(faces)} numbers "
                                 f"({ndir} directions x {len(faces)} elements); "
                                 f"got {vals.size}")
        vals = vals.reshape(len(faces), 3 * ndir)
        cell_data["fibre"] = vals[:, :3]
        if ndir == 2:
            cell_data["sheet"] = vals[:, 3:]
    try:
        return _check(elem_path, pts, np.asarray(faces, np.int64), cell_data)
    except SurfaceFileError as exc:
        raise SurfaceFileError(f"{exc} (nodes from {pts_path})") from exc


# ---------------------------------------------------------------------------------------------
# cleaning
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CleanReport:
    """What :func:`clean_surface` did.

    Attributes:
        n_vertices_in, n_faces_in: the input's size.
        n_vertices, n_faces: the result's size.
        merged_vertices: vertices merged into another within ``merge_tol_mm``.
        unreferenced_vertices: vertices dropped because no remaining face used them (unused in
            the input, or used only by dropped duplicate/degenerate faces), fragments excluded.
        duplicate_faces: faces over the same three vertices as an earlier face (either
            orientation), after merging.
        degenerate_faces: faces with a repeated vertex index (after merging).
        zero_area_faces: faces of three distinct but collinear vertices.
        fragment_faces, fragment_vertices: the size of each dropped edge-connected fragment,
            largest first.
        flipped_faces: faces whose orientation was reversed.
        closed: whether the result is closed (every edge shared by two faces).
        non_manifold_edges: edges shared by more than two faces in the result (orientation is
            not propagated across them).
        inconsistent_edges: manifold edges still traversed in the same direction by both faces
            after orientation (non-zero only for a non-orientable surface).
        min_edge_mm: the shortest remaining edge.
        max_angle_deg: the largest remaining triangle angle.
        face_index: for each result face, its index in the input (to carry per-face data).
        vertex_index: for each result vertex, the input vertex it was taken from.
    """

    n_vertices_in: int
    n_faces_in: int
    n_vertices: int
    n_faces: int
    merged_vertices: int
    unreferenced_vertices: int
    duplicate_faces: int
    degenerate_faces: int
    zero_area_faces: int
    fragment_faces: tuple[int, ...]
    fragment_vertices: tuple[int, ...]
    flipped_faces: int
    closed: bool
    non_manifold_edges: int
    inconsistent_edges: int
    min_edge_mm: float
    max_angle_deg: float
    face_index: NDArray[np.int64] = field(repr=False)
    vertex_index: NDArray[np.int64] = field(repr=False)

    @property
    def removed_anything(self) -> bool:
        """True when a vertex or face was dropped or merged."""
        return (self.n_vertices != self.n_vertices_in) or (self.n_faces != self.n_faces_in)

    @property
    def suspicious(self) -> bool:
        """True when the result has non-manifold or inconsistently oriented edges."""
        return bool(self.non_manifold_edges or self.inconsistent_edges)

    @property
    def changed(self) -> bool:
        """True when anything was dropped, merged or re-oriented."""
        return self.removed_anything or self.flipped_faces > 0

    def summary(self) -> str:
        """One line describing the changes and the remaining mesh quality."""
        parts = []
        if self.fragment_faces:
            sizes = ", ".join(f"{v} vertices/{f} faces" for v, f in
                              zip(self.fragment_vertices, self.fragment_faces))
            parts.append(f"dropped {len(self.fragment_faces)} disconnected fragment(s) ({sizes})")
        for n, what in ((self.merged_vertices, "duplicate vertices merged"),
                        (self.unreferenced_vertices, "unreferenced vertices dropped"),
                        (self.duplicate_faces, "duplicate faces dropped"),
                        (self.degenerate_faces, "degenerate faces (repeated vertex) dropped"),
                        (self.zero_area_faces, "zero-area faces dropped"),
                        (self.flipped_faces, "faces re-oriented")):
            if n:
                parts.append(f"{n} {what}")
        head = "; ".join(parts) if parts else "no changes"
        if self.non_manifold_edges:
            head += (f"; {self.non_manifold_edges} non-manifold edges (shared by more than two "
                     "faces; orientation not propagated across them)")
        if self.inconsistent_edges:
            head += (f"; {self.inconsistent_edges} edges left inconsistently oriented "
                     "(non-orientable surface)")
        return (f"{head}. Result: {self.n_vertices} vertices, {self.n_faces} faces, "
                f"{'closed' if self.closed else 'open'}; shortest edge {self.min_edge_mm:.3g} mm, "
                f"largest angle {self.max_angle_deg:.1f} deg")


def _union_close(v: NDArray[np.float64], tol: float) -> NDArray[np.int64]:
    """For each vertex, the smallest index of the vertices within ``tol`` (transitively)."""
    n = len(v)
    if tol < 0 or n == 0:
        return np.arange(n, dtype=np.int64)
    pairs = cKDTree(v).query_pairs(tol, output_type="ndarray")
    if len(pairs) == 0:
        return np.arange(n, dtype=np.int64)
    g = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, lab = csgraph.connected_components(g, directed=False)
    rep = np.full(lab.max() + 1, n, np.int64)
    np.minimum.at(rep, lab, np.arange(n))
    return rep[lab]


def _edge_table(f: NDArray[np.int64]) -> tuple[NDArray, NDArray, NDArray]:
    """Directed half-edges of the faces: (edge id per half-edge, owning face, +1 if the
    half-edge runs from the smaller to the larger index else -1)."""
    a = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    b = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    key = np.minimum(a, b) * (int(f.max()) + 1) + np.maximum(a, b)  # one int64 per edge
    _, eid = np.unique(key, return_inverse=True)
    face = np.tile(np.arange(len(f)), 3)
    return eid.ravel(), face, np.where(a < b, 1, -1)


def _components(f: NDArray[np.int64]) -> NDArray[np.int64]:
    """Edge-connected component label of each face."""
    eid, face, _ = _edge_table(f)
    m, ne = len(f), int(eid.max()) + 1
    g = sparse.coo_matrix((np.ones(len(eid)), (face, m + eid)), shape=(m + ne, m + ne))
    _, lab = csgraph.connected_components(g, directed=False)
    return lab[:m]


def _orient(f: NDArray[np.int64]) -> tuple[NDArray[np.bool_], int, int]:
    """Which faces to flip so that edge-adjacent faces agree (breadth-first over manifold
    edges, per patch keeping the majority's orientation); also the non-manifold and the
    remaining inconsistent edge counts."""
    m = len(f)
    eid, face, sign = _edge_table(f)
    counts = np.bincount(eid)
    manifold = counts[eid] == 2
    order = np.argsort(eid[manifold], kind="stable")
    he_face = face[manifold][order].reshape(-1, 2)
    he_sign = sign[manifold][order].reshape(-1, 2)
    # consistent neighbours traverse their shared edge in opposite directions; pairs that run it
    # the same way (one of them must flip) are stored as 2, the others as 1 (kept explicit)
    same = he_sign[:, 0] == he_sign[:, 1]
    i, j = he_face[:, 0], he_face[:, 1]
    par = sparse.coo_matrix((np.concatenate([same, same]) + 1.0,
                             (np.concatenate([i, j]), np.concatenate([j, i]))),
                            shape=(m, m)).tocsr()
    n_comp, lab = csgraph.connected_components(par, directed=False)
    _, roots = np.unique(lab, return_index=True)
    flip = np.zeros(m, bool)
    for root in roots:
        nodes, pred = csgraph.breadth_first_order(par, int(root), directed=False,
                                                  return_predecessors=True)
        if len(nodes) == 1:
            continue
        rest = nodes[1:]
        odd = (np.asarray(par[pred[rest], rest]).ravel() == 2).tolist()
        fl = {int(root): False}
        for node, p, o in zip(rest.tolist(), pred[rest].tolist(), odd):
            fl[node] = fl[p] ^ o
        flip[rest] = [fl[k] for k in rest.tolist()]
    # per patch, keep the orientation of the majority of the input faces
    n_flip = np.bincount(lab, weights=flip, minlength=n_comp)
    n_all = np.bincount(lab, minlength=n_comp)
    flip ^= (2 * n_flip > n_all)[lab]
    eff = he_sign * np.where(flip[he_face], -1, 1)
    inconsistent = int(np.sum(eff[:, 0] == eff[:, 1]))
    return flip, int(np.sum(counts > 2)), inconsistent


def clean_surface(mesh: TriMesh | tuple[ArrayLike, ArrayLike], *,
                  merge_tol_mm: float = MERGE_TOL_MM, keep_largest: bool = True,
                  orient: bool = True, warn: bool = True, source: str | None = None,
                  stacklevel: int = 2) -> tuple[TriMesh, CleanReport]:
    """Repair a triangle surface and report what changed.

    Steps, in order:

    1. merge vertices closer than ``merge_tol_mm`` (default 1e-6 mm: coincident up to rounding;
       transitively, each group keeps its lowest-index vertex and its coordinates);
    2. drop degenerate faces: a repeated vertex index, or zero area (twice the area below
       1e-9 times the squared mean edge, i.e. collinear vertices);
    3. drop duplicate faces (the same three vertices, either orientation; the first is kept);
    4. keep the largest component (most faces; faces connect through shared edges) when
       ``keep_largest``;
    5. drop vertices no remaining face uses (the remaining ones keep their relative order);
    6. when ``orient``: flip faces so that every two faces sharing an edge traverse it in
       opposite directions (breadth-first from a seed face, across edges shared by exactly two
       faces; each such patch keeps the orientation of the majority of its input faces); a
       closed result is then turned outward (positive signed volume). An open surface (atria
       have holes for the veins and valves) keeps the majority's orientation.

    Args:
        mesh: a :class:`TriMesh` or a ``(vertices, faces)`` pair (which, unlike a TriMesh, may
            hold degenerate faces and unused vertices).
        merge_tol_mm: merge distance (mm); negative disables merging.
        keep_largest: drop all but the largest component.
        orient: make the orientation consistent (and outward when closed).
        warn: emit one :class:`SurfaceCleanWarning` with :meth:`CleanReport.summary` when
            anything was removed, merged or re-oriented, or the result has non-manifold or
            inconsistently oriented edges.
        source: a name (e.g. the file) to start the warning with.
        stacklevel: passed to :func:`warnings.warn` (2: the caller of this function).

    Returns:
        The cleaned mesh and the :class:`CleanReport`.

    Raises:
        MeshError: non-finite coordinates, indices out of range, or no face left.
    """
    if isinstance(mesh, TriMesh):
        v0, f0 = mesh.vertices, mesh.faces
    else:
        v0 = np.asarray(mesh[0], np.float64)
        f0 = np.asarray(mesh[1])
    if v0.ndim != 2 or v0.shape[1] != 3:
        raise MeshError(f"vertices must have shape (n, 3); got {v0.shape}")
    if f0.ndim != 2 or f0.shape[1] != 3 or len(f0) == 0:
        raise MeshError(f"faces must have shape (m >= 1, 3); got {f0.shape}")
    f0 = f0.astype(np.int64)
    if not np.isfinite(v0).all():
        raise MeshError("vertices must be finite")
    if f0.min() < 0 or f0.max() >= len(v0):
        raise MeshError(f"face indices must lie in [0, {len(v0) - 1}]")
    n_in, m_in = len(v0), len(f0)

    rep = _union_close(v0, merge_tol_mm)
    merged = int(np.sum(rep != np.arange(n_in)))
    f = rep[f0]
    face_idx = np.arange(m_in)

    repeated = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])
    n_degenerate = int(repeated.sum())
    f, face_idx = f[~repeated], face_idx[~repeated]
    if len(f):
        e1, e2 = v0[f[:, 1]] - v0[f[:, 0]], v0[f[:, 2]] - v0[f[:, 0]]
        area2 = np.linalg.norm(np.cross(e1, e2), axis=1)
        mean_edge = float(np.mean(np.linalg.norm(e1, axis=1)))
        flat = area2 <= 1e-9 * max(mean_edge**2, 1e-300)
    else:
        flat = np.zeros(0, bool)
    n_flat = int(flat.sum())
    f, face_idx = f[~flat], face_idx[~flat]

    keep = np.ones(len(f), bool)
    if len(f):
        srt = np.sort(f, axis=1)
        order = np.lexsort(srt.T[::-1])  # stable: equal rows keep their input order
        again = np.all(srt[order[1:]] == srt[order[:-1]], axis=1)
        keep[order[1:][again]] = False
    n_dup = int(np.sum(~keep))
    f, face_idx = f[keep], face_idx[keep]
    if len(f) == 0:
        raise MeshError("no valid face left after removing degenerate and duplicate faces")

    frag_f: list[int] = []
    frag_v: list[int] = []
    if keep_largest:
        lab = _components(f)
        sizes = np.bincount(lab)
        main = int(np.argmax(sizes))
        in_main = lab == main
        main_verts = np.zeros(n_in, bool)
        main_verts[f[in_main].ravel()] = True
        others = [c for c in np.argsort(-sizes, kind="stable") if c != main and sizes[c]]
        claimed = main_verts
        for c in others:
            verts = np.unique(f[lab == c])
            frag_f.append(int(sizes[c]))
            frag_v.append(int(np.sum(~claimed[verts])))
            claimed[verts] = True
        f, face_idx = f[in_main], face_idx[in_main]

    used = np.unique(f)
    remap = -np.ones(n_in, np.int64)
    remap[used] = np.arange(len(used))
    f = remap[f]
    v = v0[used]
    n_unref = n_in - merged - len(used) - sum(frag_v)

    flip = np.zeros(len(f), bool)
    n_nonmanifold = n_inconsistent = 0
    closed = False
    if orient:
        flip, n_nonmanifold, n_inconsistent = _orient(f)
        f[flip] = f[flip][:, [0, 2, 1]]
    eid, _, _ = _edge_table(f)
    closed = bool(np.all(np.bincount(eid) == 2))
    if orient and closed and n_inconsistent == 0:
        vol = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum()
        if vol < 0:
            f = f[:, [0, 2, 1]]
            flip = ~flip
    out = TriMesh(v, np.ascontiguousarray(f))

    p = out.vertices[out.faces]
    ang = []
    for k in range(3):
        a = p[:, (k + 1) % 3] - p[:, k]
        b = p[:, (k + 2) % 3] - p[:, k]
        cosv = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1)
                                             * np.linalg.norm(b, axis=1))
        ang.append(np.degrees(np.arccos(np.clip(cosv, -1.0, 1.0))))
    report = CleanReport(
        n_vertices_in=n_in, n_faces_in=m_in, n_vertices=out.n_vertices, n_faces=out.n_faces,
        merged_vertices=merged, unreferenced_vertices=int(n_unref), duplicate_faces=n_dup,
        degenerate_faces=n_degenerate, zero_area_faces=n_flat, fragment_faces=tuple(frag_f),
        fragment_vertices=tuple(frag_v), flipped_faces=int(flip.sum()), closed=closed,
        non_manifold_edges=n_nonmanifold, inconsistent_edges=n_inconsistent,
        min_edge_mm=float(np.min([np.linalg.norm(p[:, (k + 1) % 3] - p[:, k], axis=1).min()
                                  for k in range(3)])),
        max_angle_deg=float(np.max(ang)),
        face_index=face_idx.astype(np.int64), vertex_index=used.astype(np.int64))
    if warn and (report.changed or report.suspicious):
        prefix = f"{source}: " if source else ""
        warnings.warn(f"{prefix}surface cleaned: {report.summary()}", SurfaceCleanWarning,
                      stacklevel=stacklevel)
    return out, report
