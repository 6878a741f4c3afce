#!/usr/bin/env python3
"""Reference data for stdlib/tests/nifti.rs, made with nibabel and numpy.

Two modes:

    python3 make_reference.py
        (Re)writes the reference NIfTI files next to this script and prints the Rust constants
        that stdlib/tests/nifti.rs pastes: the voxel values and spacing nibabel reports for each
        file, and np.percentile-based normalisations of a fixed array. The output is
        deterministic; re-running it must not change the files or the constants.

    python3 make_reference.py --verify DIR
        Checks that files written by medgen's `save_nifti` read back in nibabel with the same
        data (bit for bit), shape and spacing. DIR is filled by the ignored Rust test
        `write_files_for_nibabel`; every `*.json` there describes one file it wrote:
        {"file": name, "shape_dhw": [d, h, w], "spacing_dhw": [...], "bits_dhw": [u32 ...]}
        with the voxels as f32 bit patterns in medgen's (depth, height, width) order.
        Exits non-zero if any file disagrees.

Requires: pip install nibabel numpy (the Rust tests themselves never need Python).

Conventions: a nibabel array is indexed [x, y, z] with x = width, y = height, z = depth; medgen
stores the same voxel at (d = z, h = y, w = x). Values are printed in nibabel's C order of
[x][y][z] (z fastest), so the Rust test maps every voxel itself.
"""

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
# nibabel shape (x, y, z) = (width, height, depth); medgen shape (depth, height, width) = (4, 5, 6).
SHAPE_XYZ = (6, 5, 4)
# Zooms (x, y, z) = (width, height, depth) in mm: depth 2.0, height 0.9375, width 0.8.
ZOOMS_XYZ = (0.8, 0.9375, 2.0)
# The voxel that holds the largest value in every reference, at nibabel index [x, y, z].
MARKER_XYZ = (5, 1, 3)


def pattern(rng, low, high):
    """A fixed random volume in [low, high) with a clear maximum at MARKER_XYZ."""
    data = rng.uniform(low, high, size=SHAPE_XYZ)
    data[MARKER_XYZ] = high * 4
    return data


def rotation_z(degrees):
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


def affine_from(rotation, zooms, origin):
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(zooms)
    affine[:3, 3] = origin
    return affine


def make_int16_scaled(rng):
    """Float data stored as int16: nibabel picks scl_slope and scl_inter to fit the range."""
    data = pattern(rng, -150.0, 90.0)
    img = nib.Nifti1Image(data, np.diag([*ZOOMS_XYZ, 1.0]), dtype=np.int16)
    img.header.set_xyzt_units("mm")
    nib.save(img, HERE / "int16_scaled.nii")
    nib.save(img, HERE / "int16_scaled.nii.gz")
    return ["int16_scaled.nii", "int16_scaled.nii.gz"]


def make_float32_rotated(rng):
    """float32, no scaling, an sform rotated by 30 degrees about z and flipped in x."""
    data = pattern(rng, -2.0, 3.0).astype(np.float32)
    data[0, 0, 0] = -0.0
    data[1, 0, 0] = np.float32(1e-42)  # subnormal
    rotation = rotation_z(30.0) @ np.diag([-1.0, 1.0, 1.0])
    img = nib.Nifti1Image(data, affine_from(rotation, ZOOMS_XYZ, (90.0, -126.0, -72.0)))
    img.header.set_xyzt_units("mm")
    nib.save(img, HERE / "float32_rotated.nii.gz")
    return ["float32_rotated.nii.gz"]


def make_uint8_qform_4d(rng):
    """A uint8 mask of shape (x, y, z, 1), qform only (sform_code 0), rotated qform."""
    data = (rng.uniform(size=SHAPE_XYZ) > 0.6).astype(np.uint8)
    data[MARKER_XYZ] = 2
    affine = affine_from(rotation_z(-20.0), ZOOMS_XYZ, (10.0, 20.0, 30.0))
    img = nib.Nifti1Image(data[..., np.newaxis], None)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(None, code=0)
    img.header.set_xyzt_units("mm")
    nib.save(img, HERE / "uint8_qform_4d.nii")
    return ["uint8_qform_4d.nii"]


def make_float64_bigendian(rng):
    """float64 voxels in big-endian byte order (values beyond f32 precision)."""
    data = pattern(rng, -1.0, 1.0) / 3.0
    header = nib.Nifti1Header(endianness=">")
    img = nib.Nifti1Image(data, np.diag([*ZOOMS_XYZ, 1.0]), header=header, dtype=np.float64)
    img.header.set_xyzt_units("mm")
    nib.save(img, HERE / "float64_bigendian.nii")
    return ["float64_bigendian.nii"]


def rust_f32s(values, per_line=6):
    # str of an np.float32 is the shortest string that reads back as the same f32.
    items = [str(np.float32(v)) for v in values]
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return "[\n" + "".join(f"    {line},\n" for line in lines) + "]"


def rust_f64s(values):
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def const_name(file_name):
    return file_name.split(".")[0].upper()


def describe_reference(file_name):
    """The Rust constants for one reference: values as nibabel reports them, and spacing."""
    img = nib.load(HERE / file_name)
    header = img.header
    values = np.asarray(img.get_fdata(), dtype=np.float64)
    assert values.shape[:3] == SHAPE_XYZ and values.shape[3:] in ((), (1,)), values.shape
    values = values.reshape(SHAPE_XYZ)
    assert np.unravel_index(np.argmax(values), SHAPE_XYZ) == MARKER_XYZ
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    affine = img.affine  # sform if sform_code > 0, else qform: the same choice medgen makes
    spacing_xyz = np.sqrt(np.sum(affine[:3, :3] * affine[:3, :3], axis=0))
    zooms = header.get_zooms()[:3]
    if sform_code == 0:
        # qform: its rotation is orthonormal, so the spacing is exactly the pixdims.
        spacing_xyz = np.asarray(zooms, dtype=np.float64)
    # nibabel keeps the file's scaling on the data proxy and clears it in the loaded header.
    slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    name = const_name(file_name)
    return (
        f"// {file_name}: datatype {header.get_data_dtype()}, shape {img.shape}, "
        f"scl_slope {slope!r}, scl_inter {inter!r}, sform_code {sform_code}, qform_code {qform_code},\n"
        f"// zooms {tuple(float(z) for z in zooms)}. Values: np.float32(img.get_fdata()), C order of [x][y][z].\n"
        f"const {name}: [f32; {values.size}] = {rust_f32s(values.ravel())};\n"
        f"// Spacing (depth, height, width): column norms of img.affine (pixdims when qform only).\n"
        f"const {name}_SPACING_DHW: [f64; 3] = {rust_f64s(spacing_xyz[::-1])};\n"
    )


PERCENTILE_PAIRS = [(0.5, 99.5), (10.0, 90.0), (0.0, 100.0), (25.0, 75.0), (33.3, 66.7)]
# Includes ranks with a fraction >= 0.5, where numpy interpolates from the upper neighbour
# (b - (b - a) * (1 - t)) and the textbook a + (b - a) * t differs in the last bit.
PERCENTILES = [0.0, 0.5, 10.0, 25.0, 30.3, 33.3, 47.0, 50.0, 55.0, 66.7, 83.0, 99.5, 100.0]


def textbook_percentile(wide, p):
    ordered = np.sort(wide)
    rank = (len(ordered) - 1) * (p / 100)
    k = min(int(np.floor(rank)), len(ordered) - 1)
    if k == len(ordered) - 1:
        return ordered[k]
    return ordered[k] + (ordered[k + 1] - ordered[k]) * (rank - k)


def describe_percentiles():
    """A fixed f32 array, its percentiles and its normalisations, with numpy."""
    rng = np.random.default_rng(36)
    array = (rng.normal(size=37) * 100.0).astype(np.float32)
    array[5] = array[17]  # a tie
    wide = array.astype(np.float64)
    values = [float(np.percentile(wide, p)) for p in PERCENTILES]
    differs = [p for p, v in zip(PERCENTILES, values) if textbook_percentile(wide, p) != v]
    assert differs, "no percentile where numpy's interpolation differs from the textbook one"
    out = [
        f"// percentile: np.percentile(input.astype(np.float64), p) (numpy {np.__version__}, method 'linear');",
        f"// the textbook a + (b - a) * t gives a different f64 at p = {differs}.",
        f"const PERCENTILE_VALUES: [(f64, f64); {len(PERCENTILES)}] = ["
        + ", ".join(f"({p!r}, {v!r})" for p, v in zip(PERCENTILES, values))
        + "];",
        "// normalize_intensity: input (f32), then for each (low, high) percentile pair",
        "// ((np.clip(a, lo, hi) - lo) / (hi - lo)).astype(np.float32) with a = input.astype(np.float64)",
        "// and lo, hi = np.percentile(a, low), np.percentile(a, high) (numpy "
        + np.__version__
        + ", method 'linear').",
        f"const PERCENTILE_INPUT: [f32; {array.size}] = {rust_f32s(array)};",
        f"const PERCENTILE_CASES: [((f64, f64), [f32; {array.size}]); {len(PERCENTILE_PAIRS)}] = [",
    ]
    for low, high in PERCENTILE_PAIRS:
        lo, hi = np.percentile(wide, low), np.percentile(wide, high)
        normalized = ((np.clip(wide, lo, hi) - lo) / (hi - lo)).astype(np.float32)
        body = rust_f32s(normalized).replace("\n", "\n    ")
        out.append(f"    // lo = {float(lo)!r}, hi = {float(hi)!r}")
        out.append(f"    (({low!r}, {high!r}), {body}),")
    out.append("];")
    return "\n".join(out) + "\n"


def generate():
    rng = np.random.default_rng(82)
    files = []
    for make in (make_int16_scaled, make_float32_rotated, make_uint8_qform_4d, make_float64_bigendian):
        files += make(rng)
    print(f"// Generated by stdlib/tests/data/make_reference.py (nibabel {nib.__version__}, numpy {np.__version__}).")
    for file_name in files:
        if file_name.endswith(".nii.gz") and (HERE / file_name[: -len(".gz")]).exists():
            print(f"// {file_name}: the same image as {file_name[: -len('.gz')]}, gzip-compressed.\n")
            continue
        print(describe_reference(file_name))
    print(describe_percentiles())


def verify_one(directory, description):
    path = directory / description["file"]
    img = nib.load(path)
    header = img.header
    d, h, w = description["shape_dhw"]
    expected_dhw = np.array(description["bits_dhw"], dtype=np.uint32).view(np.float32).reshape(d, h, w)
    expected_xyz = expected_dhw.transpose(2, 1, 0)  # [x, y, z] = [w, h, d]
    problems = []
    if img.shape != (w, h, d):
        problems.append(f"shape {img.shape} != {(w, h, d)}")
    if header.get_data_dtype() != np.dtype(np.float32):
        problems.append(f"dtype {header.get_data_dtype()}")
    if header.get_slope_inter() not in ((1.0, 0.0), (None, None)):
        problems.append(f"scaling {header.get_slope_inter()}")
    data = np.asanyarray(img.dataobj)
    if data.shape == expected_xyz.shape and not np.array_equal(data.view(np.uint32), expected_xyz.view(np.uint32)):
        problems.append(f"{np.count_nonzero(data.view(np.uint32) != expected_xyz.view(np.uint32))} voxels differ")
    spacing_xyz = np.array(description["spacing_dhw"][::-1], dtype=np.float32)
    if tuple(header.get_zooms()) != tuple(spacing_xyz):
        problems.append(f"zooms {header.get_zooms()} != {tuple(spacing_xyz)}")
    expected_affine = np.diag([*spacing_xyz.astype(np.float64), 1.0])
    for name, (affine, code) in (("sform", header.get_sform(coded=True)), ("qform", header.get_qform(coded=True))):
        if code != 1 or not np.array_equal(affine, expected_affine):
            problems.append(f"{name} (code {code}) {affine.tolist()} != {expected_affine.tolist()}")
    if header.get_xyzt_units()[0] != "mm":
        problems.append(f"units {header.get_xyzt_units()}")
    return problems


def verify(directory):
    descriptions = sorted(directory.glob("*.json"))
    if not descriptions:
        sys.exit(f"no *.json descriptions in {directory}")
    failures = 0
    for description_path in descriptions:
        description = json.loads(description_path.read_text())
        problems = verify_one(directory, description)
        status = "ok" if not problems else "FAIL: " + "; ".join(problems)
        print(f"{description['file']}: shape_dhw {description['shape_dhw']} spacing_dhw {description['spacing_dhw']}: {status}")
        failures += bool(problems)
    print(f"nibabel {nib.__version__}: {len(descriptions) - failures} of {len(descriptions)} files agree")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--verify":
        verify(Path(sys.argv[2]))
    elif len(sys.argv) == 1:
        generate()
    else:
        sys.exit(__doc__)
