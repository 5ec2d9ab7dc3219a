"""Reading triangle surfaces from files (egmlib.physics.surface_io) and cleaning messy ones.

Every file is written here, from a known sphere, by hand (VTK legacy and XML, OBJ, STL, openCARP)
or with meshio (VTU, PLY), then read back.
"""

from __future__ import annotations

import base64
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csgraph

from egmlib.physics.geometry import MeshError, TriMesh, sphere_mesh
from egmlib.physics.surface_io import (
    CleanReport,
    SurfaceCleanWarning,
    SurfaceFileError,
    clean_surface,
    read_surface,
    read_surface_data,
)

meshio = pytest.importorskip("meshio")


@pytest.fixture(scope="module")
def sphere() -> TriMesh:
    return sphere_mesh(10.0, 3.0, center=(1.0, -2.0, 3.0))


def _read_quiet(path: Path, **kw) -> TriMesh:
    """read_surface, failing on any cleaning warning (a well-formed file needs no repair)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SurfaceCleanWarning)
        return read_surface(path, **kw)


# ---------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------
def _vtk_legacy(path: Path, v: np.ndarray, f: np.ndarray, *, binary: bool, layout: str = "classic",
                dataset: str = "POLYDATA", cell_types: np.ndarray | None = None,
                point_type: str = "double", cell_data: dict | None = None,
                sizes: np.ndarray | None = None) -> Path:
    """A VTK legacy file; binary data big-endian (struct / numpy '>' dtypes)."""
    out = bytearray()

    def line(text: str) -> None:
        out.extend(text.encode() + b"\n")

    def data(arr: np.ndarray, be: str) -> None:
        arr = np.asarray(arr).ravel()
        if binary:
            out.extend(arr.astype(be).tobytes() + b"\n")
        else:
            fmt = "{:.17g}" if be[1] == "f" else "{:d}"
            line(" ".join(fmt.format(x) for x in arr.tolist()))

    line("# vtk DataFile Version " + ("5.1" if layout == "5.1" else "3.0"))
    line("test surface")
    line("BINARY" if binary else "ASCII")
    line(f"DATASET {dataset}")
    line(f"POINTS {len(v)} {point_type}")
    data(v, ">f8" if point_type == "double" else ">f4")
    key = "POLYGONS" if dataset == "POLYDATA" else "CELLS"
    cells = [np.asarray(c) for c in f]
    conn = np.concatenate(cells) if cells else np.zeros(0, int)
    n_per = np.array([len(c) for c in cells]) if sizes is None else sizes
    if layout == "5.1":
        offsets = np.concatenate([[0], np.cumsum(n_per)])
        line(f"{key} {len(offsets)} {len(conn)}")
        line("OFFSETS vtktypeint64")
        data(offsets, ">i8")
        line("CONNECTIVITY vtktypeint64")
        data(conn, ">i8")
    else:
        flat = np.concatenate([np.concatenate([[len(c)], c]) for c in cells]) if cells else conn
        line(f"{key} {len(cells)} {len(flat)}")
        data(flat, ">i4")
    if dataset == "UNSTRUCTURED_GRID":
        types = np.full(len(cells), 5) if cell_types is None else cell_types
        line(f"CELL_TYPES {len(types)}")
        data(types, ">i4")
    if cell_data:
        line(f"CELL_DATA {len(cells)}")
        for name, arr in cell_data.items():
            if arr.ndim == 2:
                line(f"VECTORS {name} double")
                data(arr, ">f8")
            else:
                line(f"SCALARS {name} int 1")
                line("LOOKUP_TABLE default")
                data(arr, ">i4")
    path.write_bytes(bytes(out))
    return path


def _vtp(path: Path, v: np.ndarray, f: np.ndarray, mode: str,
         cell_data: dict | None = None) -> Path:
    """A VTK XML PolyData file; ``mode``: ascii, binary, zlib (inline compressed), appended."""
    arrays = [("Points", None, v.astype("<f8"), "Float64", 3),
              ("Polys", "connectivity", f.ravel().astype("<i8"), "Int64", 1),
              ("Polys", "offsets", np.arange(3, 3 * len(f) + 1, 3).astype("<i8"), "Int64", 1)]
    for name, arr in (cell_data or {}).items():
        arrays.append(("CellData", name, arr.astype("<f8"), "Float64",
                       arr.shape[1] if arr.ndim == 2 else 1))
    appended = bytearray()
    xml = {"Points": [], "Polys": [], "CellData": []}
    for section, name, arr, typ, ncomp in arrays:
        attrs = f'type="{typ}" NumberOfComponents="{ncomp}"' + (f' Name="{name}"' if name else "")
        raw = arr.tobytes()
        if mode == "ascii":
            body = " ".join(repr(x) for x in arr.ravel().tolist())
            xml[section].append(f'<DataArray {attrs} format="ascii">{body}</DataArray>')
        elif mode == "binary":
            body = base64.b64encode(struct.pack("<I", len(raw)) + raw).decode()
            xml[section].append(f'<DataArray {attrs} format="binary">{body}</DataArray>')
        elif mode == "zlib":
            comp = zlib.compress(raw)
            head = struct.pack("<4I", 1, len(raw), len(raw), len(comp))
            body = base64.b64encode(head).decode() + base64.b64encode(comp).decode()
            xml[section].append(f'<DataArray {attrs} format="binary">{body}</DataArray>')
        else:
            xml[section].append(f'<DataArray {attrs} format="appended" '
                                f'offset="{len(appended)}"/>')
            appended += struct.pack("<I", len(raw)) + raw
    compressor = ' compressor="vtkZLibDataCompressor"' if mode == "zlib" else ""
    text = (f'<?xml version="1.0"?>\n<VTKFile type="PolyData" version="1.0" '
            f'byte_order="LittleEndian" header_type="UInt32"{compressor}>\n<PolyData>\n'
            f'<Piece NumberOfPoints="{len(v)}" NumberOfVerts="0" NumberOfLines="0" '
            f'NumberOfStrips="0" NumberOfPolys="{len(f)}">\n'
            f'<Points>{"".join(xml["Points"])}</Points>\n'
            f'<CellData>{"".join(xml["CellData"])}</CellData>\n'
            f'<Polys>{"".join(xml["Polys"])}</Polys>\n</Piece>\n</PolyData>\n')
    data = text.encode()
    if mode == "appended":
        data += b'<AppendedData encoding="raw">\n_' + bytes(appended) + b"\n</AppendedData>\n"
    path.write_bytes(data + b"</VTKFile>\n")
    return path


def _stl(path: Path, v: np.ndarray, f: np.ndarray, binary: bool) -> Path:
    tri = v[f]
    with np.errstate(invalid="ignore"):
        nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    if binary:
        rec = np.zeros(len(f), [("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
        rec["n"], rec["v"] = nrm, tri
        path.write_bytes(b"solid binary header".ljust(80, b" ")
                         + struct.pack("<I", len(f)) + rec.tobytes())
    else:
        lines = ["solid test"]
        for t, n in zip(tri, nrm):
            lines += [f"  facet normal {n[0]:.9g} {n[1]:.9g} {n[2]:.9g}", "    outer loop"]
            lines += [f"      vertex {p[0]!r} {p[1]!r} {p[2]!r}" for p in t.tolist()]
            lines += ["    endloop", "  endfacet"]
        path.write_text("\n".join([*lines, "endsolid test"]) + "\n")
    return path


def _obj(path: Path, v: np.ndarray, f: np.ndarray, style: str = "plain") -> Path:
    lines = ["# test", "o sphere"]
    for p in v.tolist():  # with vertex colours, which a plain reader chokes on
        lines.append(f"v {p[0]!r} {p[1]!r} {p[2]!r}" + (" 0.5 0.5 0.5" if style == "slash" else ""))
    lines.append("vn 0 0 1")
    for a, b, c in (f + 1).tolist():
        if style == "slash":
            lines.append(f"f {a}/1/1 {b}//1 {c}/1")
        elif style == "negative":
            n = len(v)
            lines.append(f"f {a - n - 1} {b - n - 1} {c - n - 1}")
        else:
            lines.append(f"f {a} {b} {c}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _carp(stem: Path, v_um: np.ndarray, f: np.ndarray, tags: np.ndarray | None = None,
          kind: str = "Tr") -> Path:
    pts = [str(len(v_um))] + [f"{p[0]!r} {p[1]!r} {p[2]!r}" for p in v_um.tolist()]
    stem.with_name(stem.name + ".pts").write_text("\n".join(pts) + "\n")
    tags = np.zeros(len(f), int) if tags is None else tags
    elem = [str(len(f))] + [f"{kind} {' '.join(map(str, c))} {t}"
                            for c, t in zip(f.tolist(), tags.tolist())]
    stem.with_name(stem.name + ".elem").write_text("\n".join(elem) + "\n")
    return stem


def _first_appearance(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertex order of first appearance in the faces, and the faces renumbered to it (how a
    format storing corners per face, such as STL, numbers the merged vertices)."""
    flat = f.ravel()
    _, first = np.unique(flat, return_index=True)
    order = flat[np.sort(first)]
    rank = np.empty(order.max() + 1, np.int64)
    rank[order] = np.arange(len(order))
    return order, rank[f]


# ---------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("binary", [False, True], ids=["ascii", "binary"])
@pytest.mark.parametrize("layout", ["classic", "5.1"])
@pytest.mark.parametrize("dataset", ["POLYDATA", "UNSTRUCTURED_GRID"])
def test_vtk_legacy_round_trip(tmp_path, sphere, binary, layout, dataset):
    region = np.arange(sphere.n_faces) % 3
    fibre = np.tile([1.0, 0.0, 0.0], (sphere.n_faces, 1))
    path = _vtk_legacy(tmp_path / "s.vtk", sphere.vertices, sphere.faces, binary=binary,
                       layout=layout, dataset=dataset,
                       cell_data={"region": region, "fibre": fibre})
    mesh = _read_quiet(path)
    np.testing.assert_array_equal(mesh.vertices, sphere.vertices)
    np.testing.assert_array_equal(mesh.faces, sphere.faces)
    _, _, cd = read_surface_data(path)
    np.testing.assert_array_equal(cd["region"], region)
    np.testing.assert_array_equal(cd["fibre"], fibre)


def test_vtk_legacy_binary_float_points_by_struct(tmp_path):
    """A binary POLYDATA written field by field with struct ('>' big-endian), float points."""
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    body = b"# vtk DataFile Version 3.0\nclinical export\nBINARY\nDATASET POLYDATA\n"
    body += b"POINTS 4 float\n" + struct.pack(">12f", *v.ravel()) + b"\n"
    body += b"POLYGONS 4 16\n" + struct.pack(">16i", *np.hstack([np.full((4, 1), 3),
                                                                  f]).ravel()) + b"\n"
    body += b"CELL_DATA 4\nSCALARS lat float\nLOOKUP_TABLE default\n"
    body += struct.pack(">4f", 1.5, 2.5, 3.5, 4.5) + b"\n"
    (tmp_path / "t.vtk").write_bytes(body)
    mesh = _read_quiet(tmp_path / "t.vtk")
    np.testing.assert_array_equal(mesh.vertices, v)
    np.testing.assert_array_equal(mesh.faces, f)
    assert mesh.signed_volume() > 0
    np.testing.assert_array_equal(read_surface_data(tmp_path / "t.vtk")[2]["lat"],
                                  [1.5, 2.5, 3.5, 4.5])


@pytest.mark.parametrize("fmt_version", ["4.2", "5.1"])
@pytest.mark.parametrize("binary", [False, True], ids=["ascii", "binary"])
def test_vtk_legacy_written_by_meshio(tmp_path, sphere, fmt_version, binary):
    path = tmp_path / "m.vtk"
    meshio.vtk.write(path, meshio.Mesh(sphere.vertices, [("triangle", sphere.faces)]),
                     fmt_version=fmt_version, binary=binary)
    mesh = _read_quiet(path)
    np.testing.assert_allclose(mesh.vertices, sphere.vertices, rtol=0, atol=0)
    np.testing.assert_array_equal(mesh.faces, sphere.faces)


@pytest.mark.parametrize("mode", ["ascii", "binary", "zlib", "appended"])
def test_vtp_round_trip(tmp_path, sphere, mode):
    fibre = np.tile([0.0, 1.0, 0.0], (sphere.n_faces, 1))
    path = _vtp(tmp_path / "s.vtp", sphere.vertices, sphere.faces, mode, {"fibre": fibre})
    mesh = _read_quiet(path)
    np.testing.assert_array_equal(mesh.vertices, sphere.vertices)
    np.testing.assert_array_equal(mesh.faces, sphere.faces)
    np.testing.assert_array_equal(read_surface_data(path)[2]["fibre"], fibre)


@pytest.mark.parametrize(("ext", "kw"), [(".vtu", {}), (".vtu", {"binary": False}),
                                         (".ply", {"binary": False}), (".ply", {"binary": True})],
                         ids=["vtu-zlib", "vtu-ascii", "ply-ascii", "ply-binary"])
def test_meshio_formats_round_trip(tmp_path, sphere, ext, kw):
    path = tmp_path / f"s{ext}"
    meshio.write_points_cells(path, sphere.vertices, [("triangle", sphere.faces)], **kw)
    mesh = _read_quiet(path)
    if ext == ".vtu" and not kw.get("binary", True):  # meshio writes 12 significant digits
        np.testing.assert_allclose(mesh.vertices, sphere.vertices, rtol=1e-11, atol=0)
    else:
        np.testing.assert_array_equal(mesh.vertices, sphere.vertices)
    np.testing.assert_array_equal(mesh.faces, sphere.faces)


@pytest.mark.parametrize("style", ["plain", "slash", "negative"])
def test_obj_round_trip(tmp_path, sphere, style):
    mesh = _read_quiet(_obj(tmp_path / "s.obj", sphere.vertices, sphere.faces, style))
    np.testing.assert_array_equal(mesh.vertices, sphere.vertices)
    np.testing.assert_array_equal(mesh.faces, sphere.faces)


@pytest.mark.parametrize("binary", [False, True], ids=["ascii", "binary"])
def test_stl_round_trip(tmp_path, sphere, binary):
    """STL stores corners per face: vertices come back numbered by first appearance (and in
    float32 for binary STL)."""
    mesh = _read_quiet(_stl(tmp_path / "s.stl", sphere.vertices, sphere.faces, binary))
    order, faces = _first_appearance(sphere.faces)
    expected = sphere.vertices[order]
    if binary:
        expected = expected.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(mesh.vertices, expected)
    np.testing.assert_array_equal(mesh.faces, faces)


@pytest.mark.parametrize("given", ["stem", ".pts", ".elem"])
def test_opencarp_micrometres_to_mm(tmp_path, sphere, given):
    tags = np.arange(sphere.n_faces) % 4 + 10
    stem = _carp(tmp_path / "atria", sphere.vertices * 1000.0, sphere.faces, tags)
    n_dir = 2
    lon = np.tile([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], (sphere.n_faces, 1))
    (tmp_path / "atria.lon").write_text(f"{n_dir}\n" + "\n".join(
        " ".join(map(str, r)) for r in lon.tolist()) + "\n")
    path = stem if given == "stem" else stem.with_name(stem.name + given)
    mesh = _read_quiet(path)
    np.testing.assert_allclose(mesh.vertices, sphere.vertices, rtol=1e-15, atol=1e-12)
    np.testing.assert_array_equal(mesh.faces, sphere.faces)
    _, _, cd = read_surface_data(path)
    np.testing.assert_array_equal(cd["region"], tags)
    np.testing.assert_array_equal(cd["fibre"], lon[:, :3])
    np.testing.assert_array_equal(cd["sheet"], lon[:, 3:])
    in_um = read_surface(path, pts_unit_mm=1.0)
    np.testing.assert_allclose(in_um.vertices, sphere.vertices * 1000.0)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
TET_V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
TET_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def test_error_is_a_value_error():
    assert issubclass(SurfaceFileError, MeshError)
    assert issubclass(SurfaceFileError, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(SurfaceFileError, match=r"nope\.vtk: no such file"):
        read_surface(tmp_path / "nope.vtk")
    with pytest.raises(SurfaceFileError, match=r"nope\.pts: no such file"):
        read_surface(tmp_path / "nope.pts")
    _carp(tmp_path / "half", TET_V, TET_F)
    (tmp_path / "half.elem").unlink()
    with pytest.raises(SurfaceFileError, match=r"half\.elem: no such file"):
        read_surface(tmp_path / "half")


@pytest.mark.parametrize(("name", "text", "match"), [
    ("s.xyz", "1 2 3\n", r"s\.xyz: unknown surface format '\.xyz'"),
    ("p.vtk", "# vtk DataFile Version 3.0\nx\nASCII\nDATASET POLYDATA\nPOINTS 3 float\n"
              "0 0 0 1 0 0 0 1 0\n", r"p\.vtk: no triangles found"),
    ("e.obj", "v 0 0 0\nv 1 0 0\n", r"e\.obj: no triangles found"),
    ("g.vtk", "# vtk DataFile Version 3.0\nx\nASCII\nDATASET STRUCTURED_POINTS\n"
              "DIMENSIONS 2 2 2\n", "STRUCTURED_POINTS is not a surface"),
])
def test_files_without_a_triangle_surface_are_refused(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(SurfaceFileError, match=match):
        read_surface(tmp_path / name)


def test_quads_and_tetrahedra_are_named(tmp_path):
    quads = [np.array([0, 1, 2, 3]), np.array([0, 1, 3]), np.array([1, 2, 3, 0])]
    path = _vtk_legacy(tmp_path / "q.vtk", TET_V, quads, binary=True)
    with pytest.raises(SurfaceFileError, match=r"q\.vtk: .*found 1 triangle, 2 quad cells"):
        read_surface(path)
    path = _vtk_legacy(tmp_path / "t.vtk", TET_V, [np.arange(4)], binary=False,
                       dataset="UNSTRUCTURED_GRID", cell_types=np.array([10]))
    with pytest.raises(SurfaceFileError, match=r"t\.vtk: .*found 1 tetrahedron cells"):
        read_surface(path)
    path = tmp_path / "t.vtu"
    meshio.write_points_cells(path, TET_V, [("tetra", np.array([[0, 1, 2, 3]]))])
    with pytest.raises(SurfaceFileError, match=r"t\.vtu: .*found 1 tetra cells"):
        read_surface(path)
    path = tmp_path / "q.ply"
    meshio.write_points_cells(path, TET_V, [("quad", np.array([[0, 1, 2, 3]]))])
    with pytest.raises(SurfaceFileError, match=r"q\.ply: .*found 1 quad cells"):
        read_surface(path)
    (tmp_path / "q.obj").write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3 4\nf 1 2 3\n")
    with pytest.raises(SurfaceFileError, match=r"q\.obj: .*found 1 triangle, 1 quad cells"):
        read_surface(tmp_path / "q.obj")
    _carp(tmp_path / "vol", TET_V * 1000, np.array([[0, 1, 2, 3]]), kind="Tt")
    with pytest.raises(SurfaceFileError, match=r"vol\.elem: .*found 1 tetrahedron cells"):
        read_surface(tmp_path / "vol")


def test_non_finite_coordinates(tmp_path):
    v = TET_V.copy()
    v[2, 1] = np.nan
    path = _vtk_legacy(tmp_path / "n.vtk", v, TET_F, binary=True)
    with pytest.raises(SurfaceFileError, match=r"n\.vtk: 1 vertices have non-finite "
                                                r"coordinates \(first: vertex 2"):
        read_surface(path)
    v[2, 1] = np.inf
    path = _stl(tmp_path / "n.stl", v, TET_F, binary=True)
    with pytest.raises(SurfaceFileError, match=r"n\.stl: .*non-finite"):
        read_surface(path)


def test_index_out_of_range(tmp_path):
    f = TET_F.copy()
    f[3, 2] = 7
    path = _vtk_legacy(tmp_path / "i.vtk", TET_V, f, binary=False, layout="5.1")
    with pytest.raises(SurfaceFileError, match=r"i\.vtk: vertex index out of range: face 3 "
                                                r"is \[1, 2, 7\] but there are 4 vertices"):
        read_surface(path)
    (tmp_path / "i.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n")
    with pytest.raises(SurfaceFileError, match=r"i\.obj: vertex index out of range"):
        read_surface(tmp_path / "i.obj")
    _carp(tmp_path / "c", TET_V * 1000, f)
    with pytest.raises(SurfaceFileError, match=r"c\.elem: vertex index out of range"):
        read_surface(tmp_path / "c.pts")


def test_truncated_binary(tmp_path, sphere):
    full = _vtk_legacy(tmp_path / "full.vtk", sphere.vertices, sphere.faces,
                       binary=True).read_bytes()
    for cut in (len(full) // 3, len(full) - 40):
        (tmp_path / "cut.vtk").write_bytes(full[:cut])
        with pytest.raises(SurfaceFileError, match=r"cut\.vtk: truncated binary data"):
            read_surface(tmp_path / "cut.vtk")
    stl = _stl(tmp_path / "full.stl", sphere.vertices, sphere.faces, True).read_bytes()
    (tmp_path / "cut.stl").write_bytes(stl[:-20])
    with pytest.raises(SurfaceFileError, match=r"cut\.stl: truncated binary STL: the header "
                                                r"lists 318 triangles"):
        read_surface(tmp_path / "cut.stl")
    vtp = _vtp(tmp_path / "full.vtp", sphere.vertices, sphere.faces, "appended").read_bytes()
    (tmp_path / "cut.vtp").write_bytes(vtp[:len(vtp) // 2])
    with pytest.raises(SurfaceFileError, match=r"cut\.vtp: truncated"):
        read_surface(tmp_path / "cut.vtp")
    meshio.write_points_cells(tmp_path / "full.ply", sphere.vertices,
                              [("triangle", sphere.faces)], binary=True)
    ply = (tmp_path / "full.ply").read_bytes()
    (tmp_path / "cut.ply").write_bytes(ply[:len(ply) // 2])
    with pytest.raises(SurfaceFileError, match=r"cut\.ply: malformed or truncated"):
        read_surface(tmp_path / "cut.ply")


def test_truncated_ascii(tmp_path, sphere):
    text = _vtk_legacy(tmp_path / "a.vtk", sphere.vertices, sphere.faces,
                       binary=False).read_text()
    (tmp_path / "cut.vtk").write_text(text[: len(text) - 200])
    with pytest.raises(SurfaceFileError, match=r"cut\.vtk: truncated data: POLYGONS"):
        read_surface(tmp_path / "cut.vtk")
    _carp(tmp_path / "c", sphere.vertices * 1000, sphere.faces)
    pts = (tmp_path / "c.pts").read_text().splitlines()
    (tmp_path / "c.pts").write_text("\n".join(pts[:-5]))
    with pytest.raises(SurfaceFileError, match=r"c\.pts: truncated: the header lists"):
        read_surface(tmp_path / "c")


def test_unclean_file_without_cleaning(tmp_path):
    v = np.vstack([TET_V, [[5.0, 5.0, 5.0]]])  # an unused vertex
    path = _vtk_legacy(tmp_path / "u.vtk", v, TET_F, binary=False)
    with pytest.raises(SurfaceFileError, match=r"u\.vtk: 1 vertices belong to no face.*"
                                                r"clean=True"):
        read_surface(path, clean=False)
    with pytest.warns(SurfaceCleanWarning, match=r"u\.vtk: surface cleaned: 1 unreferenced"):
        mesh = read_surface(path)
    np.testing.assert_array_equal(mesh.vertices, TET_V)


# ---------------------------------------------------------------------------------------------
# cleaning
# ---------------------------------------------------------------------------------------------
def _broken(sphere: TriMesh):
    """The sphere plus planted defects, and what was planted."""
    v, f = sphere.vertices, sphere.faces
    n = len(v)
    frag = sphere_mesh(1.5, 1.2, center=(40.0, 0.0, 0.0))  # a separate small fragment
    copies = np.array([0, 5, 9])  # duplicated vertices (within 1e-8 mm)
    isolated = np.array([[0.0, 0.0, 60.0]])
    mid = (v[f[7, 0]] + v[f[7, 1]]) / 2  # for a zero-area face (collinear corners)
    verts = np.vstack([v, frag.vertices, v[copies] + 1e-8, isolated, mid[None]])
    i_copy = n + frag.n_vertices
    i_mid = i_copy + len(copies) + 1
    faces = f.copy()
    flipped = np.array([3, 40, 41, 200])
    faces[flipped] = faces[flipped][:, [0, 2, 1]]
    for k, c in enumerate(copies):  # every face using a copied vertex takes the copy
        faces[faces == c] = i_copy + k
    faces = np.vstack([faces, frag.faces + n,
                       f[[11]][:, ::-1],  # duplicate face (reversed)
                       [[f[2, 0], f[2, 0], f[2, 1]]],  # repeated index
                       [[f[7, 0], f[7, 1], i_mid]]])  # zero area
    planted = dict(merged_vertices=3, duplicate_faces=1, degenerate_faces=1, zero_area_faces=1,
                   unreferenced_vertices=2, fragment_faces=(frag.n_faces,),
                   fragment_vertices=(frag.n_vertices,), flipped_faces=len(flipped))
    return verts, faces, planted


def test_clean_surface_repairs_what_was_planted(sphere):
    verts, faces, planted = _broken(sphere)
    with pytest.warns(SurfaceCleanWarning) as rec:
        mesh, report = clean_surface((verts, faces))
    assert len(rec) == 1
    msg = str(rec[0].message)
    for text in ("1 disconnected fragment", "3 duplicate vertices merged",
                 "2 unreferenced vertices", "1 duplicate faces", "4 faces re-oriented",
                 "shortest edge", "largest angle"):
        assert text in msg, msg
    assert isinstance(report, CleanReport)
    for key, value in planted.items():
        assert getattr(report, key) == value, key
    assert report.closed and report.non_manifold_edges == 0 and report.inconsistent_edges == 0
    assert report.n_vertices_in == len(verts) and report.n_faces_in == len(faces)
    # the cleaned sphere is the original (here even the numbering survives)
    np.testing.assert_array_equal(mesh.vertices, sphere.vertices)
    np.testing.assert_array_equal(mesh.faces, sphere.faces)
    np.testing.assert_array_equal(report.face_index, np.arange(sphere.n_faces))
    np.testing.assert_array_equal(report.vertex_index, np.arange(sphere.n_vertices))
    assert mesh.signed_volume() > 0 and mesh.is_closed()
    assert report.min_edge_mm == pytest.approx(sphere.edge_lengths().min())


def test_clean_surface_result_is_one_consistent_outward_component(sphere):
    """Independent of the planting bookkeeping: shuffle everything and check the properties."""
    verts, faces, planted = _broken(sphere)
    rng = np.random.default_rng(3)
    perm = rng.permutation(len(verts))
    inv = np.argsort(perm)
    verts, faces = verts[perm], inv[faces][rng.permutation(len(faces))]
    with pytest.warns(SurfaceCleanWarning):
        mesh, report = clean_surface((verts, faces))
    for key, value in planted.items():
        assert getattr(report, key) == value, key
    assert mesh.n_vertices == sphere.n_vertices and mesh.n_faces == sphere.n_faces
    assert csgraph.connected_components(mesh.adjacency(), directed=False)[0] == 1
    directed = np.concatenate([mesh.faces[:, [0, 1]], mesh.faces[:, [1, 2]],
                               mesh.faces[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)  # each half-edge once
    assert mesh.signed_volume() == pytest.approx(sphere.signed_volume())
    # same vertex set, and the same faces up to renumbering and rotation of each face
    order = np.lexsort(mesh.vertices.T)
    ref = np.lexsort(sphere.vertices.T)
    np.testing.assert_allclose(mesh.vertices[order], sphere.vertices[ref], atol=1e-7)
    to_ref = np.empty(mesh.n_vertices, np.int64)
    to_ref[order] = ref

    def canon(f: np.ndarray) -> np.ndarray:
        f = np.array([np.roll(r, -int(np.argmin(r))) for r in f])
        return f[np.lexsort(f.T[::-1])]

    np.testing.assert_array_equal(canon(to_ref[mesh.faces]), canon(sphere.faces))


def test_clean_surface_turns_an_inward_closed_surface_outward(sphere):
    inward = sphere.faces[:, ::-1]
    with pytest.warns(SurfaceCleanWarning, match=f"{sphere.n_faces} faces re-oriented"):
        mesh, report = clean_surface(TriMesh(sphere.vertices, inward))
    assert report.flipped_faces == sphere.n_faces
    assert mesh.signed_volume() == pytest.approx(sphere.signed_volume())


def test_clean_surface_open_surface_keeps_the_majority_orientation(sphere):
    keep = sphere.vertices[:, 2] < 3.0 + 6.0  # cut a cap off: an open surface
    cap, _ = sphere.submesh(keep)
    inward = cap.faces[:, [0, 2, 1]].copy()
    inward[:5] = cap.faces[:5]  # a minority already outward
    with pytest.warns(SurfaceCleanWarning, match="5 faces re-oriented"):
        mesh, report = clean_surface((cap.vertices, inward))
    assert not report.closed and report.flipped_faces == 5
    np.testing.assert_array_equal(mesh.faces, cap.faces[:, [0, 2, 1]])


def test_clean_surface_of_a_clean_mesh_is_silent(sphere):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mesh, report = clean_surface(sphere)
    assert not report.changed
    np.testing.assert_array_equal(mesh.faces, sphere.faces)
    assert report.summary().startswith("no changes")
    assert report.max_angle_deg < 180.0


def test_clean_surface_merge_tolerance(sphere):
    v = np.vstack([sphere.vertices, sphere.vertices[:1] + 1e-4])
    f = sphere.faces.copy()
    f[f == 0] = len(v) - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SurfaceCleanWarning)
        _, strict = clean_surface((v, f))
        _, loose = clean_surface((v, f), merge_tol_mm=1e-3)
    assert strict.merged_vertices == 0 and strict.unreferenced_vertices == 1
    assert loose.merged_vertices == 1 and loose.unreferenced_vertices == 0


def test_clean_surface_rejects_bad_arrays():
    with pytest.raises(MeshError, match="finite"):
        clean_surface((np.array([[0, 0, np.nan], [1, 0, 0], [0, 1, 0]]), [[0, 1, 2]]))
    with pytest.raises(MeshError, match="indices"):
        clean_surface((TET_V, [[0, 1, 9]]))
    with pytest.raises(MeshError, match="no valid face"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clean_surface((TET_V, [[0, 0, 1]]))


def test_ply_with_vertex_index_property(tmp_path, sphere):
    """Some exporters name the face list 'vertex_index' (meshio 5.3 knows 'vertex_indices')."""
    for binary in (False, True):
        meshio.write_points_cells(tmp_path / "a.ply", sphere.vertices,
                                  [("triangle", sphere.faces)], binary=binary)
        raw = (tmp_path / "a.ply").read_bytes().replace(b"vertex_indices", b"vertex_index", 1)
        (tmp_path / "b.ply").write_bytes(raw)
        mesh = _read_quiet(tmp_path / "b.ply")
        np.testing.assert_array_equal(mesh.vertices, sphere.vertices)
        np.testing.assert_array_equal(mesh.faces, sphere.faces)


def test_read_surface_warns_at_the_caller(tmp_path):
    v = np.vstack([TET_V, [[5.0, 5.0, 5.0]]])
    path = _vtk_legacy(tmp_path / "u.vtk", v, TET_F, binary=True)
    with pytest.warns(SurfaceCleanWarning) as rec:
        read_surface(path)
    assert rec[0].filename == __file__


def test_face_and_vertex_index_map_back_to_the_input(sphere):
    """report.face_index and report.vertex_index carry per-face / per-vertex data over."""
    verts, faces, _ = _broken(sphere)
    with pytest.warns(SurfaceCleanWarning):
        mesh, report = clean_surface((verts, faces))
    np.testing.assert_array_equal(verts[report.vertex_index], mesh.vertices)
    corners_in = np.sort(verts[faces[report.face_index]], axis=1)
    corners_out = np.sort(mesh.vertices[mesh.faces], axis=1)
    np.testing.assert_allclose(corners_out, corners_in, atol=1e-7)


def test_non_manifold_fin_is_reported(sphere):
    """A fin face on an existing edge makes that edge non-manifold: reported and warned."""
    a, b = sphere.faces[0, :2]
    tip = (sphere.vertices[a] + sphere.vertices[b]) / 2 * 1.3
    v = np.vstack([sphere.vertices, tip])
    f = np.vstack([sphere.faces, [[a, b, len(v) - 1]]])
    with pytest.warns(SurfaceCleanWarning, match="1 non-manifold edges"):
        mesh, report = clean_surface((v, f))
    assert report.non_manifold_edges == 1 and not report.closed
    assert report.flipped_faces == 0 and mesh.n_faces == sphere.n_faces + 1


def test_moebius_strip_is_reported_non_orientable():
    n = 12
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    rows = []
    for s in (-1.0, 1.0):  # the band's two rims, half-twisted once around the loop
        w = 2.0 * s
        rows.append(np.column_stack([(10 + w * np.cos(t / 2)) * np.cos(t),
                                     (10 + w * np.cos(t / 2)) * np.sin(t), w * np.sin(t / 2)]))
    v = np.vstack(rows)
    faces = []
    for k in range(n):
        a, b = k, n + k
        if k < n - 1:
            c, d = k + 1, n + k + 1
        else:  # the twist: the rims swap when the loop closes
            c, d = n, 0
        faces += [[a, c, b], [b, c, d]]
    with pytest.warns(SurfaceCleanWarning, match="non-orientable"):
        _, report = clean_surface((v, np.array(faces)))
    assert report.inconsistent_edges >= 1
