"""Tiny archives in the real CUB-200-2011, Oxford-102 and Reed et al. caption layouts.

Every image is seeded noise, red-dominant inside the crop box the test expects (hand-computed
below from the bounding box, as AttnGAN does) and green-dominant outside, so a wrong crop shows up
both in an exact comparison and in the colour balance.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

# ------------------------------------------------------------------ tar helpers


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def make_tar(path: Path, files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        dirs = sorted({"/".join(n.split("/")[:i]) for n in files for i in range(1, n.count("/") + 1)})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in files.items():
            add_file(tar, name, data)
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def image_bytes(size: tuple[int, int], box: tuple[int, int, int, int], mode: str, seed: int) -> bytes:
    """A JPEG of ``size`` (w, h): noise, red inside ``box`` (x1, y1, x2, y2), green outside."""
    w, h = size
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
    arr[..., 1] += 150  # green background
    x1, y1, x2, y2 = box
    inside = rng.integers(0, 60, size=(y2 - y1, x2 - x1, 3), dtype=np.uint8)
    inside[..., 0] += 190  # red object
    arr[y1:y2, x1:x2] = inside
    img = Image.fromarray(arr, "RGB")
    if mode == "L":  # bright inside, dark outside
        gray = np.where(arr[..., 0] > 150, 200, 30).astype(np.uint8) + rng.integers(0, 40, size=(h, w), dtype=np.uint8)
        img = Image.fromarray(gray, "L")
    elif mode == "CMYK":
        img = img.convert("CMYK")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def caption_lines(key: str, n: int = 10) -> list[str]:
    tag = key.replace("/", " ").replace(".", " ").replace("_", " ").lower()
    return [f"caption {k} of image {tag} with a red body and green leaves" for k in range(n)]


def caption_file(key: str) -> bytes:
    return ("\n".join(caption_lines(key)) + "\n").encode()


# ------------------------------------------------------------------ CUB


@dataclass(frozen=True)
class CubImage:
    id: int
    rel: str
    class_id: int  # 1-based, classes.txt
    size: tuple[int, int]  # (w, h)
    mode: str
    bbox: str  # as in bounding_boxes.txt
    box: tuple[int, int, int, int]  # expected crop (x1, y1, x2, y2), computed by hand


CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani"]
CUB_TRAIN_CLASSES = CUB_CLASSES[:3]
CUB_TEST_CLASSES = CUB_CLASSES[3:]

# box = (cx - r, cy - r, cx + r, cy + r) clipped, r = int(0.75 * max(w, h)), cx = int((2x + w) / 2)
CUB_IMAGES = [
    # bbox 30,20,20,10: r = 15, c = (40, 25)
    CubImage(
        1,
        "001.Black_footed_Albatross/Black_Footed_Albatross_0001_1.jpg",
        1,
        (100, 80),
        "RGB",
        "30.0 20.0 20.0 10.0",
        (25, 10, 55, 40),
    ),
    # bbox 2.7,3.9,40,30 -> ints 2,3,40,30: r = 30, c = (22, 18); clipped at left and top
    CubImage(
        2,
        "001.Black_footed_Albatross/Black_Footed_Albatross_0002_2.jpg",
        1,
        (120, 90),
        "RGB",
        "2.7 3.9 40.0 30.0",
        (0, 0, 52, 48),
    ),
    # grayscale; bbox 40,40,20,20: r = 15, c = (50, 50); clipped right and bottom at 64
    CubImage(
        3, "002.Laysan_Albatross/Laysan_Albatross_0001_3.jpg", 2, (64, 64), "L", "40.0 40.0 20.0 20.0", (35, 35, 64, 64)
    ),
    # CMYK; bbox 10,10,30,20: r = int(22.5) = 22, c = (25, 20); clipped top
    CubImage(
        4,
        "002.Laysan_Albatross/Laysan_Albatross_0002_4.jpg",
        2,
        (80, 60),
        "CMYK",
        "10.0 10.0 30.0 20.0",
        (3, 0, 47, 42),
    ),
    # bbox 11,5,21,9: r = int(15.75) = 15, c = (int(21.5), int(9.5)) = (21, 9); clipped top
    CubImage(
        5, "003.Sooty_Albatross/Sooty_Albatross_0001_5.jpg", 3, (50, 50), "RGB", "11.0 5.0 21.0 9.0", (6, 0, 36, 24)
    ),
    # bbox 20,15,40,40: r = 30, c = (40, 35)
    CubImage(
        6, "003.Sooty_Albatross/Sooty_Albatross_0002_6.jpg", 3, (90, 70), "RGB", "20.0 15.0 40.0 40.0", (10, 5, 70, 65)
    ),
    # bbox 10,30,30,50: r = int(37.5) = 37, c = (25, 55); clipped left
    CubImage(
        7,
        "004.Groove_billed_Ani/Groove_Billed_Ani_0001_7.jpg",
        4,
        (70, 100),
        "RGB",
        "10.0 30.0 30.0 50.0",
        (0, 18, 62, 92),
    ),
    # bbox = whole image 60x60: r = 45, c = (30, 30); clipped on all sides
    CubImage(
        8, "004.Groove_billed_Ani/Groove_Billed_Ani_0002_8.jpg", 4, (60, 60), "RGB", "0.0 0.0 60.0 60.0", (0, 0, 60, 60)
    ),
    # bbox 5.5,10.2,8.9,12.7 -> ints 5,10,8,12: r = 9, c = (9, 16); clipped left
    CubImage(
        9, "004.Groove_billed_Ani/Groove_Billed_Ani_0003_9.jpg", 4, (48, 64), "RGB", "5.5 10.2 8.9 12.7", (0, 7, 18, 25)
    ),
]


def cub_jpegs() -> dict[str, bytes]:
    return {im.rel: image_bytes(im.size, im.box, im.mode, seed=im.id) for im in CUB_IMAGES}


def build_cub_archive(
    path: Path,
    *,
    drop: tuple[str, ...] = (),
    replace: dict[str, bytes] | None = None,
    extra: list[tarfile.TarInfo] = (),
) -> Path:
    top = "CUB_200_2011"
    files = {
        f"{top}/images.txt": "".join(f"{im.id} {im.rel}\n" for im in CUB_IMAGES).encode(),
        f"{top}/image_class_labels.txt": "".join(f"{im.id} {im.class_id}\n" for im in CUB_IMAGES).encode(),
        f"{top}/bounding_boxes.txt": "".join(f"{im.id} {im.bbox}\n" for im in CUB_IMAGES).encode(),
        f"{top}/classes.txt": "".join(f"{i} {c}\n" for i, c in enumerate(CUB_CLASSES, 1)).encode(),
        f"{top}/train_test_split.txt": "".join(f"{im.id} {im.id % 2}\n" for im in CUB_IMAGES).encode(),
        f"{top}/README": b"tiny CUB-200-2011 look-alike for tests\n",
        "attributes.txt": b"1 has_bill_shape::curved_(up_or_down)\n",
    }
    for rel, data in {**cub_jpegs(), **(replace or {})}.items():
        if rel not in drop:
            files[f"{top}/images/{rel}"] = data
    return make_tar(path, files, extra)


def build_caption_archive(
    path: Path,
    top: str,
    captions: dict[tuple[str, str], bytes | None],
    train_classes: list[str],
    test_classes: list[str],
) -> Path:
    """``captions[(class_dir, image_stem)]`` = file bytes, or None for a missing file."""
    files = {
        f"{top}/trainvalclasses.txt": "".join(c + "\n" for c in train_classes).encode(),
        f"{top}/testclasses.txt": "".join(c + "\n" for c in test_classes).encode(),
        f"{top}/trainclasses.txt": "".join(c + "\n" for c in train_classes[:-1]).encode(),
        f"{top}/valclasses.txt": (train_classes[-1] + "\n").encode(),
        f"{top}/images/features.t7": b"\0" * 64,  # stands for the large features: not extracted
    }
    for (class_dir, stem), data in captions.items():
        if data is not None:
            files[f"{top}/text_c10/{class_dir}/{stem}.txt"] = data
    return make_tar(path, files)


def cub_captions() -> dict[tuple[str, str], bytes | None]:
    out = {}
    for im in CUB_IMAGES:
        class_dir, name = im.rel.split("/")
        out[(class_dir, name[:-4])] = caption_file(im.rel)
    # AttnGAN-style quirks in one file: blank lines skipped, U+FFFD pairs replaced, 11 lines cut to 10.
    key = CUB_IMAGES[0].rel
    lines = caption_lines(key, 11)
    lines[3] = lines[3].replace(" with ", " with\ufffd\ufffd")
    out[("001.Black_footed_Albatross", "Black_Footed_Albatross_0001_1")] = ("\n\n".join(lines) + "\n").encode()
    return out


def expected_cub_captions(im: CubImage) -> list[str]:
    return caption_lines(im.rel, 10)  # the U+FFFD pair in image 1's file became the space it replaced


# ------------------------------------------------------------------ Oxford-102


@dataclass(frozen=True)
class FlowerImage:
    index: int  # 1-based, image_%05d.jpg
    label: int  # 1-based class
    size: tuple[int, int]
    mode: str


FLOWER_IMAGES = [
    FlowerImage(1, 3, (70, 50), "RGB"),
    FlowerImage(2, 1, (40, 60), "L"),
    FlowerImage(3, 4, (64, 64), "RGB"),
    FlowerImage(4, 2, (50, 50), "RGB"),
    FlowerImage(5, 1, (90, 40), "RGB"),
    FlowerImage(6, 4, (60, 80), "CMYK"),
    FlowerImage(7, 2, (33, 47), "RGB"),
    FlowerImage(8, 4, (80, 60), "RGB"),
]
FLOWER_TRAIN_CLASSES = ["class_00001", "class_00002", "class_00003"]
FLOWER_TEST_CLASSES = ["class_00004"]
FLOWER_SETID = {"trnid": [1, 2, 3], "valid": [4, 5], "tstid": [6, 7, 8]}


def flower_key(fl: FlowerImage) -> str:
    return f"jpg/image_{fl.index:05d}.jpg"


def flower_jpegs() -> dict[str, bytes]:
    out = {}
    for fl in FLOWER_IMAGES:
        w, h = fl.size
        out[flower_key(fl)] = image_bytes(
            fl.size, (w // 4, h // 4, 3 * w // 4, 3 * h // 4), fl.mode, seed=100 + fl.index
        )
    return out


def build_flowers(directory: Path, *, drop: tuple[str, ...] = (), setid: dict | None = None) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {k: v for k, v in flower_jpegs().items() if k not in drop}
    tgz = make_tar(directory / "102flowers.tgz", files)
    labels = directory / "imagelabels.mat"
    scipy.io.savemat(labels, {"labels": np.array([[fl.label for fl in FLOWER_IMAGES]], dtype=np.float64)})
    setid_path = directory / "setid.mat"
    ids = setid or FLOWER_SETID
    scipy.io.savemat(setid_path, {k: np.array([v], dtype=np.uint16) for k, v in ids.items()})
    return {"102flowers.tgz": tgz, "imagelabels.mat": labels, "setid.mat": setid_path}


def flower_captions() -> dict[tuple[str, str], bytes | None]:
    return {(f"class_{fl.label:05d}", f"image_{fl.index:05d}"): caption_file(flower_key(fl)) for fl in FLOWER_IMAGES}
