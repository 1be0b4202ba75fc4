"""The registry of named data sets: where each is published, what it must be, how to train on it.

Each :class:`Dataset` names its official archive(s) (URL, size in bytes, sha256 where published),
its licence and citation, the folder layout after extraction, and the reference training recipe.
``translate train --pair NAME`` trains with that recipe; any option given on the command line or
in a ``--config`` file overrides it.

Sources of the figures below: the reference repository's download scripts and docs/datasets.md
(junyanz/pytorch-CycleGAN-and-pix2pix), the CycleGAN archives' sizes and sha256 from
tensorflow_datasets' ``url_checksums/cycle_gan.txt`` and split counts from its catalog, MNIST and
Fashion-MNIST digests from tensorflow_datasets and the Fashion-MNIST README, training recipes from
the two papers (Zhu et al. 2017; Isola et al. 2017, appendix) and the reference's defaults. The
pix2pix archives have no published sha256: the first download records one (``checksums.json``).

Names that are both a pix2pix and a CycleGAN set (facades, maps) are the paired pix2pix archive
under the plain name and the CycleGAN archive as ``<name>_unpaired``.
"""
from __future__ import annotations

import contextlib
import difflib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from . import MIRROR_ENV, ROOT_ENV
from .download import (MANIFEST, ChecksumStore, NoSpaceError, OfflineError, RemoteFile, archive_format,
                       check_free_space, check_manifest, extract, fetch, human_size, place_files)

log = logging.getLogger("translate.data")

DEFAULT_ROOT = "datasets"
LOCK_FILE = ".download.lock"  # held while a data set is fetched and unpacked into the root

CYCLEGAN_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/"
PIX2PIX_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/"

CYCLEGAN_CITATION = ("Jun-Yan Zhu, Taesung Park, Phillip Isola, Alexei A. Efros. Unpaired Image-to-Image "
                     "Translation using Cycle-Consistent Adversarial Networks. ICCV 2017.")
PIX2PIX_CITATION = ("Phillip Isola, Jun-Yan Zhu, Tinghui Zhou, Alexei A. Efros. Image-to-Image Translation "
                    "with Conditional Adversarial Networks. CVPR 2017.")
HED_CITATION = "Saining Xie, Zhuowen Tu. Holistically-Nested Edge Detection. ICCV 2015."
RESEARCH_ONLY = "no licence published; images remain their owners' (for research use)"

# The reference's recipes. Image size 256 crops from images resized to 286; 200 epochs are 100 at
# the full learning rate and 100 decaying linearly to zero.
CYCLEGAN_RECIPE: dict[str, Any] = {"model": "cyclegan", "size": 256, "epochs": 200, "batch_size": 1, "lr": 2e-4,
                                   "gan_loss": "lsgan", "lambda_cycle": 10.0, "lambda_identity": 0.5,
                                   "pool_size": 50}
PIX2PIX_RECIPE: dict[str, Any] = {"model": "pix2pix", "size": 256, "epochs": 200, "batch_size": 1, "lr": 2e-4,
                                  "gan_loss": "nonsaturating", "lambda_l1": 100.0, "direction": "AtoB"}
# CUT's reference recipe for its unpaired sets (Park et al. 2020 and taesungp/contrastive-unpaired-translation's
# defaults): 200 + 200 epochs (FastCUT 150 + 50), LSGAN, Adam (0.5, 0.999), batch 1, no replay pool.
CUT_RECIPE: dict[str, Any] = {"model": "cut", "size": 256, "epochs": 400, "decay_from": 0.5, "batch_size": 1,
                              "lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "gan_loss": "lsgan", "pool_size": 0,
                              "lambda_nce": 1.0, "nce_idt": True}
FASTCUT_RECIPE: dict[str, Any] = {**CUT_RECIPE, "model": "fastcut", "epochs": 200, "decay_from": 0.75,
                                  "lambda_nce": 10.0, "nce_idt": False, "flip_equivariance": True}


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: str  # "unpaired" (CycleGAN) | "paired" (pix2pix, A|B side by side) | "labelled" | "images"
    description: str
    files: tuple[RemoteFile, ...]
    licence: str
    citation: str
    layout: tuple[str, ...]  # paths that must exist in the data set folder
    layout_note: str
    recipe: dict[str, Any] = field(default_factory=dict)  # empty: not a training set
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)  # family -> its own recipe, besides recipe's
    archive_root: str | None = None  # the archive's top folder, whose contents become the data set folder
    counts: dict[str, int] = field(default_factory=dict)  # images per sub-folder, where published
    approx_bytes: int | None = None  # download size where the exact one is not published
    classes: tuple[str, ...] = ()
    manual: str | None = None  # why and how to obtain it by hand, where it cannot be downloaded
    homepage: str | None = None

    @property
    def folder(self) -> str:
        return self.name

    @property
    def size(self) -> int | None:
        """Bytes to download (exact when every file's size is published)."""
        if all(f.size is not None for f in self.files) and self.files:
            return sum(f.size for f in self.files)  # type: ignore[misc]
        return self.approx_bytes

    @property
    def size_text(self) -> str:
        if self.size is None:
            return "unknown"
        exact = bool(self.files) and all(f.size is not None for f in self.files)
        return ("" if exact else "~") + human_size(self.size or 0)

    @property
    def downloadable(self) -> bool:
        return self.manual is None and bool(self.files)

    def recipe_for(self, model: str | None) -> dict[str, Any] | None:
        """The recipe a run of family ``model`` (None: the data set's own) takes from this data set:
        its main recipe, or the family's own one here; None when it has none for that family."""
        if model is None or model == self.recipe.get("model"):
            return dict(self.recipe)
        return dict(self.recipes[model]) if model in self.recipes else None


def _cyclegan(name: str, sha256: str, size: int, counts: tuple[int, int, int, int], description: str,
              folder_note: str, licence: str = RESEARCH_ONLY, recipe: dict | None = None,
              citation: str = CYCLEGAN_CITATION, **kw) -> Dataset:
    zip_name = name.removesuffix("_unpaired")
    return Dataset(
        name=name, kind="unpaired", description=description,
        files=(RemoteFile(f"{CYCLEGAN_URL}{zip_name}.zip", f"{zip_name}.zip", size, sha256),),
        licence=licence, citation=citation, layout=("trainA", "trainB"),
        layout_note=f"trainA/ trainB/ testA/ testB/ ({folder_note})", recipe=recipe or dict(CYCLEGAN_RECIPE),
        recipes={"cut": dict(CUT_RECIPE), "fastcut": dict(FASTCUT_RECIPE)},
        archive_root=zip_name, counts=dict(zip(("trainA", "trainB", "testA", "testB"), counts)),
        homepage="https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix/blob/master/docs/datasets.md", **kw)


def _pix2pix(name: str, size: int | None, approx: int, description: str, a_b: str, recipe: dict,
             counts: dict[str, int], licence: str = RESEARCH_ONLY, citation: str = PIX2PIX_CITATION,
             **kw) -> Dataset:
    return Dataset(
        name=name, kind="paired", description=description,
        files=(RemoteFile(f"{PIX2PIX_URL}{name}.tar.gz", f"{name}.tar.gz", size, None),),
        licence=licence, citation=citation, layout=("train",),
        layout_note=f"train/ val/ [test/]: each image is A|B side by side ({a_b})",
        recipe={**PIX2PIX_RECIPE, **recipe}, archive_root=name, counts=counts, approx_bytes=approx,
        **{"homepage": "https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix/blob/master/docs/datasets.md", **kw})


def _idx(base: str, alternates: tuple[str, ...], files: list[tuple[str, int, str]]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(base + n, n, size, sha, tuple(a + n for a in alternates)) for n, size, sha in files)


MNIST_FILES = _idx("https://ossci-datasets.s3.amazonaws.com/mnist/",
                   ("https://storage.googleapis.com/cvdf-datasets/mnist/", "http://yann.lecun.com/exdb/mnist/"), [
    ("train-images-idx3-ubyte.gz", 9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    ("train-labels-idx1-ubyte.gz", 28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    ("t10k-images-idx3-ubyte.gz", 1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    ("t10k-labels-idx1-ubyte.gz", 4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
])
FASHION_FILES = _idx("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", (), [
    ("train-images-idx3-ubyte.gz", 26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    ("train-labels-idx1-ubyte.gz", 29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    ("t10k-images-idx3-ubyte.gz", 4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    ("t10k-labels-idx1-ubyte.gz", 5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
])
IDX_LAYOUT = tuple(f.filename for f in MNIST_FILES)
IDX_NOTE = ("the four IDX files as published, gzipped: train-images/train-labels (60,000) and "
            "t10k-images/t10k-labels (10,000), 28x28 grayscale")
LABELLED_RECIPE = {"model": "dcgan", "size": 28}
CITYSCAPES_HOW = (
    "The Cityscapes licence forbids redistribution, so it cannot be downloaded automatically. Register at "
    "https://www.cityscapes-dataset.com, download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip, and "
    "prepare them with the reference's datasets/prepare_cityscapes_dataset.py (junyanz/pytorch-CycleGAN-and-pix2pix) "
    "--output_dir <root>/cityscapes: it pairs each leftImg8bit photo with its gtFine_color label map, resizes both "
    "to 256x256 and saves them side by side, photo left (A) and labels right (B), in train/ (2975) and test/ (500, "
    "Cityscapes' val split), plus trainA/ trainB/ testA/ testB/ for CycleGAN. translate then finds the folder as it "
    "is; --model cyclegan trains CycleGAN on the same folder.")

_ENTRIES = [
    # --- CycleGAN (unpaired) ------------------------------------------------------------------
    _cyclegan("apple2orange", "845a191e9af8926408ea597001cd03a452e3300a1f44a79fe329b3d59f6e3eb8", 78456409,
              (995, 1019, 266, 248), "apples <-> navel oranges", "ImageNet photos, 256x256"),
    _cyclegan("summer2winter_yosemite", "167fe1726807a9d22bd106b4a6c0bd7953b688af924ac1bf967439c4961e49f9",
              132640856, (1231, 962, 309, 238), "Yosemite in summer <-> winter", "Flickr photos, 256x256"),
    _cyclegan("horse2zebra", "a74d9d392eecca9966b51287a76ca126af473d9de4f3e8fc0e9cda08fa1730a1", 116867962,
              (1067, 1334, 120, 140), "horses <-> zebras", "ImageNet photos, 256x256"),
    _cyclegan("monet2photo", "88f91b00fc228f97c9411fbf1880ec1d119c98f1722e4cfcfaa2fb35fac05b04", 305231073,
              (1072, 6287, 121, 751), "Monet paintings <-> landscape photos", "WikiArt paintings, Flickr photos"),
    _cyclegan("cezanne2photo", "3a6c10ca21f9485862f1cbd707744b9dc258954a04631271d23a3605eeb63cff", 279885071,
              (525, 6287, 58, 751), "Cezanne paintings <-> landscape photos", "WikiArt paintings, Flickr photos"),
    _cyclegan("ukiyoe2photo", "02a2a2fb5ecf425ca1bf86aca7304377da64a2a1d3b86df54eb65e4068bf3b08", 292946532,
              (562, 6287, 263, 751), "ukiyo-e prints <-> landscape photos", "WikiArt prints, Flickr photos"),
    _cyclegan("vangogh2photo", "362c3473e70be0944bda08d49d660eafdc2854df55d697835b8186d1d79caaff", 306590349,
              (400, 6287, 400, 751), "Van Gogh paintings <-> landscape photos", "WikiArt paintings, Flickr photos"),
    _cyclegan("iphone2dslr_flower", "8fcb5e374d631b107e1d961b8c4cd0a186aa2a4ff3e279923f4c426128de7113",
              339964458, (1812, 3325, 569, 480), "flower photos: smartphone <-> DSLR shallow depth of field",
              "Flickr photos"),
    _cyclegan("facades_unpaired", "9a31ebf3a31b9b5cd195dd5bf62e9308e00cb94604d1019e3889ac84248695c0", 35135868,
              (400, 400, 106, 106), "CMP Facades, unpaired: photos <-> label maps (the CycleGAN facades.zip)",
              "A = photo, B = label map, same file names", licence="CMP Facade Database: research use",
              citation=CYCLEGAN_CITATION + " Radim Tylecek, Radim Sara. Spatial Pattern Templates for Recognition "
                                           "of Objects with Regular Structure. GCPR 2013."),
    _cyclegan("maps_unpaired", "639534f69dbf9f36bef8d6292a7698006361221f83f0285d7c9ca78afe6e8a9e", 1476754427,
              (1096, 1096, 1098, 1098), "aerial photos <-> Google maps, unpaired (the CycleGAN maps.zip)",
              "A = aerial photo, B = map, scraped from Google Maps",
              licence="scraped from Google Maps: Google's terms apply; research use"),
    Dataset(name="ae_photos", kind="images", description="test photos taken by Alexei Efros, for trying trained "
            "photo -> painting CycleGAN models (not a training set)",
            files=(RemoteFile(f"{CYCLEGAN_URL}ae_photos.zip", "ae_photos.zip"),), licence=RESEARCH_ONLY,
            citation=CYCLEGAN_CITATION, layout=(), layout_note="photos (no trainA/trainB)", archive_root="ae_photos",
            homepage="https://github.com/junyanz/CycleGAN#datasets"),
    # --- pix2pix (paired, A|B side by side) --------------------------------------------------
    _pix2pix("facades", 30168306, 30168306, "CMP Facades: label maps <-> photos of building facades",
             "A = photo, B = label map", {"direction": "BtoA"}, {"train": 400, "val": 100, "test": 106},
             licence="CMP Facade Database: research use",
             citation=PIX2PIX_CITATION + " Radim Tylecek, Radim Sara. Spatial Pattern Templates for Recognition of "
                                         "Objects with Regular Structure. GCPR 2013.",
             homepage="https://cmp.felk.cvut.cz/~tylecr1/facade/"),
    _pix2pix("maps", 250242400, 250242400, "aerial photos <-> Google maps", "A = aerial photo, B = map",
             {"direction": "AtoB"}, {"train": 1096, "val": 1098},
             licence="scraped from Google Maps: Google's terms apply; research use"),
    _pix2pix("edges2shoes", None, 2 << 30, "HED edge maps -> shoe photos (UT Zappos50K)", "A = edges, B = photo",
             {"epochs": 15, "batch_size": 4}, {"train": 49825, "val": 200},
             citation=PIX2PIX_CITATION + " Aron Yu, Kristen Grauman. Fine-Grained Visual Comparisons with Local "
                                         "Learning. CVPR 2014. " + HED_CITATION),
    _pix2pix("edges2handbags", None, 8 << 30, "HED edge maps -> handbag photos (iGAN, Amazon)",
             "A = edges, B = photo", {"epochs": 15, "batch_size": 4}, {"train": 138567, "val": 200},
             citation=PIX2PIX_CITATION + " Jun-Yan Zhu, Philipp Krahenbuhl, Eli Shechtman, Alexei A. Efros. "
                                         "Generative Visual Manipulation on the Natural Image Manifold. ECCV 2016. "
                                         + HED_CITATION),
    _pix2pix("night2day", None, 1900 << 20, "webcam scenes at night <-> by day (Transient Attributes)",
             "A = night, B = day", {"epochs": 17, "batch_size": 4, "direction": "BtoA"}, {},
             citation=PIX2PIX_CITATION + " Pierre-Yves Laffont, Zhile Ren, Xiaofeng Tao, Chao Qian, James Hays. "
                                         "Transient Attributes for High-Level Understanding and Editing of Outdoor "
                                         "Scenes. ACM TOG (SIGGRAPH) 2014."),
    Dataset(name="cityscapes", kind="paired", description="Cityscapes: semantic label maps <-> street photos",
            files=(), licence="Cityscapes licence: non-commercial research use, no redistribution",
            citation=PIX2PIX_CITATION + " Marius Cordts et al. The Cityscapes Dataset for Semantic Urban Scene "
                                        "Understanding. CVPR 2016.",
            layout=("train",), layout_note="train/ test/: each image is A|B side by side (A = photo, B = labels)",
            recipe={**PIX2PIX_RECIPE, "direction": "BtoA"}, counts={"train": 2975, "test": 500},
            manual=CITYSCAPES_HOW, homepage="https://www.cityscapes-dataset.com"),
    # --- labelled digits / clothes for the unconditional and conditional models ---------------
    Dataset(name="mnist", kind="labelled", description="handwritten digits 0-9, 28x28 grayscale",
            files=MNIST_FILES, licence="no licence published by the authors; widely redistributed for research",
            citation="Yann LeCun, Corinna Cortes, Christopher J.C. Burges. The MNIST database of handwritten digits. "
                     "http://yann.lecun.com/exdb/mnist/, 1998.",
            layout=IDX_LAYOUT, layout_note=IDX_NOTE, recipe=dict(LABELLED_RECIPE),
            classes=tuple(str(i) for i in range(10)), homepage="http://yann.lecun.com/exdb/mnist/"),
    Dataset(name="fashion_mnist", kind="labelled", description="Zalando article images in 10 classes, 28x28 grayscale",
            files=FASHION_FILES, licence="MIT (Copyright 2017 Zalando SE)",
            citation="Han Xiao, Kashif Rasul, Roland Vollgraf. Fashion-MNIST: a Novel Image Dataset for Benchmarking "
                     "Machine Learning Algorithms. arXiv:1708.07747, 2017.",
            layout=IDX_LAYOUT, layout_note=IDX_NOTE, recipe=dict(LABELLED_RECIPE),
            classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                     "Ankle boot"), homepage="https://github.com/zalandoresearch/fashion-mnist"),
]
DATASETS: dict[str, Dataset] = {d.name: d for d in _ENTRIES}
ALIASES = {"fashion-mnist": "fashion_mnist", "fashionmnist": "fashion_mnist", "summer2winter": "summer2winter_yosemite",
           "iphone2dslr": "iphone2dslr_flower"}


def get(name: str) -> Dataset:
    key = ALIASES.get(name.lower(), name.lower())
    if key in DATASETS:
        return DATASETS[key]
    close = difflib.get_close_matches(key, DATASETS, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ConfigError(f"unknown data set {name!r}; {hint}'translate data list' shows the named data sets "
                      f"(or give your own folder with --data DIR)")


def data_root(root: str | Path | None = None) -> Path:
    """Where data sets live: ``--root``, else ``$TRANSLATE_DATA``, else ``./datasets``."""
    return Path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT).expanduser()


def mirror_url(mirror: str | None = None) -> str | None:
    return mirror or os.environ.get(MIRROR_ENV) or None


def has_layout(ds: Dataset, folder: Path) -> bool:
    return folder.is_dir() and all((folder / p).exists() for p in ds.layout) and (
        bool(ds.layout) or (folder / MANIFEST).is_file())


def locate(ds: Dataset, root: str | Path | None = None) -> Path | None:
    """The data set's folder if it is there: ``<root>/<name>``, or ``root`` itself when it is that
    data set's folder (named so, or unpacked from its archive) with the expected layout, so data a
    user got elsewhere is used as is."""
    root = data_root(root)
    if has_layout(ds, root / ds.folder):
        return root / ds.folder
    names = {ds.folder, ds.name, *(a for a, n in ALIASES.items() if n == ds.name)}
    if has_layout(ds, root) and (root.resolve().name.lower() in names or _unpacked_from(ds, root)):
        return root
    return None


def _unpacked_from(ds: Dataset, folder: Path) -> bool:
    import json

    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if data.get("name"):
        return data["name"] == ds.name
    if data.get("archive") is None:  # loose files (MNIST-style) share names: compare their digests
        files = data.get("files", {})
        return all(f.sha256 and files.get(f.filename, [None, None])[1] == f.sha256 for f in ds.files)
    return data.get("archive") in {f.filename for f in ds.files}


def downloads_dir(ds: Dataset, root: Path) -> Path:
    return root / "downloads" / ds.name


def ensure(ds: Dataset, root: str | Path | None = None, *, mirror: str | None = None,
           from_archive: str | Path | None = None, keep_archive: bool = False, skip_checksum: bool = False,
           quiet: bool = False, timeout: float = 30.0) -> Path:
    """Return the data set's folder, downloading, verifying and unpacking it first when it is missing.

    Processes that call this at once (one per GPU under torchrun) take turns: the first downloads,
    the others then find the folder in place.
    """
    found = locate(ds, root)
    if found is not None and from_archive is None:
        return found
    root = data_root(root)
    target = root / ds.folder
    if found is not None:
        raise DataError(f"{ds.name} is already in {found}; move that folder away first to unpack {from_archive} "
                        f"in its place")
    if ds.manual:
        raise DataError(f"{ds.name} is not in {target}. {ds.manual}")
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root / LOCK_FILE):
        found = locate(ds, root)
        if found is not None and from_archive is None:
            return found
        for stale in root.glob(f".{target.name}.*.partial"):  # left by a killed extraction
            shutil.rmtree(stale, ignore_errors=True)
        return _download_and_unpack(ds, root, target, mirror=mirror_url(mirror), from_archive=from_archive,
                                    keep_archive=keep_archive, skip_checksum=skip_checksum, quiet=quiet,
                                    timeout=timeout)


@contextlib.contextmanager
def _lock(path: Path):
    """One download into a root at a time, across processes (and on Windows: filelock)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another download into %s to finish", path.parent)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _download_and_unpack(ds: Dataset, root: Path, target: Path, *, mirror: str | None,
                         from_archive: str | Path | None, keep_archive: bool, skip_checksum: bool, quiet: bool,
                         timeout: float) -> Path:
    if target.exists():
        missing = [p for p in ds.layout if not (target / p).exists()]
        raise DataError(f"{target} exists but is not a complete {ds.name} data set (missing "
                        f"{', '.join(missing) or 'its manifest'}); move it away or complete it, then run again")
    store = ChecksumStore(root)
    dl = downloads_dir(ds, root)
    if from_archive is not None:
        fetched = _from_archive(ds, Path(from_archive), store, skip_checksum)
        owned = False
    else:
        if ds.size:  # the archive and what it unpacks to: about twice the download
            have = sum(p.stat().st_size for p in dl.glob("*")) if dl.is_dir() else 0
            check_free_space(root, max(2 * ds.size - have, 0), f"{ds.name} ({ds.size_text} download, unpacked)")
        log.info("downloading %s (%s) into %s", ds.name, ds.size_text, root)
        fetched = []
        for rf in ds.files:
            urls = [f"{mirror.rstrip('/')}/{ds.name}/{rf.filename}", f"{mirror.rstrip('/')}/{rf.filename}"] \
                if mirror else None
            try:
                fetched.append(fetch(rf, dl / rf.filename, urls=urls, store=store, key=f"{ds.name}/{rf.filename}",
                                     timeout=timeout, skip_checksum=skip_checksum, quiet=quiet))
            except OfflineError as exc:
                missing = [f for f in ds.files if not (dl / f.filename).is_file()]
                via = f" (the mirror {mirror} failed too)" if mirror else ""
                why = str(exc).split(". On a machine")[0].removeprefix("could not download ")
                them = "it" if len(missing) == 1 else "them"
                raise OfflineError(
                    f"could not download {ds.name}: {why}{via}. On a machine with "
                    f"internet, fetch {' '.join(f.url for f in missing)} and put {them}"
                    f" in {dl} (or run 'translate data download {ds.name} --from-archive "
                    f"{'FILE' if len(ds.files) == 1 else 'DIR'}'), then run the command again") from None
        owned = True
    local = [p for p, _ in fetched]
    try:
        if ds.archive_root is not None:
            archive = local[0]
            # Images are already compressed: the data unpack to about the archive's size. The limit
            # stops a damaged or hostile archive from filling the disk.
            limit = 4 * archive.stat().st_size + (256 << 20)
            manifest = extract(archive, target, root_in_archive=ds.archive_root, max_bytes=limit, name=ds.name,
                               quiet=quiet)
        else:
            manifest = place_files(local, target, name=ds.name)
    except NoSpaceError:
        raise  # the download is fine: keep it for the next run
    except DataError as exc:
        if owned:  # a download that does not unpack is removed, so the next run fetches it afresh
            for f in local:
                f.unlink(missing_ok=True)
            raise DataError(f"{exc}".split("; delete it")[0] + "; removed the download, run the command again to "
                            "fetch it afresh") from None
        raise
    missing = [p for p in ds.layout if not (target / p).exists()]
    if missing:
        bad = target.with_name(f"{target.name}.incomplete")
        shutil.rmtree(bad, ignore_errors=True)
        target.rename(bad)
        if owned:  # not the archive we expected: fetch it afresh next time
            for f in local:
                f.unlink(missing_ok=True)
        raise DataError(f"the {ds.name} archive unpacked without {', '.join(missing)} (left in {bad} for a look"
                        f"{'; the download was removed' if owned else ''}); it is not the expected archive")
    for rf, (path, digest) in zip(ds.files, fetched):  # proved good: remember unpublished digests
        key = f"{ds.name}/{rf.filename}"
        if not rf.sha256 and not store.get(key):
            store.record(key, path.stat().st_size, digest)
            log.info("note: no published sha256 for %s; recorded %s in %s, later downloads are checked against it",
                     rf.filename, digest, store.path)
    if owned and not keep_archive:
        for f in local:
            f.unlink(missing_ok=True)
        _rmdir_empty(dl)
    log.info("%s ready in %s (%d files)", ds.name, target, len(manifest))
    return target


def _rmdir_empty(folder: Path) -> None:
    for d in (folder, folder.parent):
        try:
            d.rmdir()
        except OSError:
            return


def _from_archive(ds: Dataset, path: Path, store: ChecksumStore, skip_checksum: bool) -> list[tuple[Path, str]]:
    """Check a user-supplied archive (or, for data sets of several files, a folder holding them)."""
    if not path.exists():
        names = ", ".join(f.filename for f in ds.files)
        raise DataError(f"{path} does not exist; give the downloaded archive ({names})")
    if len(ds.files) > 1:
        folder = path if path.is_dir() else path.parent
        local = []
        for rf in ds.files:
            p = folder / rf.filename
            if not p.is_file():
                raise DataError(f"{p} is missing; --from-archive for {ds.name} takes the folder holding "
                                f"{', '.join(f.filename for f in ds.files)}")
            local.append(p)
    else:
        if path.is_dir():
            raise DataError(f"{path} is a folder; --from-archive takes the archive file ({ds.files[0].filename})")
        archive_format(path)
        local = [path]
    return [(p, _check_local(rf, p, store, f"{ds.name}/{rf.filename}", skip_checksum))
            for rf, p in zip(ds.files, local)]


def _check_local(rf: RemoteFile, path: Path, store: ChecksumStore, key: str, skip_checksum: bool) -> str:
    """A user's archive is checked like a download, but never removed; returns its sha256."""
    from .download import mismatch, sha256_file

    got = sha256_file(path)
    found = None if skip_checksum else mismatch(rf, path.stat().st_size, got, key, store)
    if found is not None:
        raise DataError(f"{path} is not the published {rf.filename}: it {found[0]}; download it again from "
                        f"{rf.url}")
    return got


def verify(ds: Dataset, root: str | Path | None = None, *, deep: bool = True,
           quiet: bool = False) -> tuple[Path, list[str], list[str]]:
    """Check a data set on disk. Returns (folder, problems, notes); no problems means it is intact.

    A folder unpacked by translate is checked file by file against its manifest (sizes, and with
    ``deep`` the sha256 of every file). A folder from elsewhere is checked for the layout, readable
    images and, as notes, the published image counts.
    """
    from ..images import is_image_file, probe

    folder = locate(ds, root)
    if folder is None:
        where = data_root(root) / ds.folder
        raise DataError(f"{ds.name} is not in {where}; get it with 'translate data download {ds.name}'"
                        + (" (or --root DIR where it already is)" if ds.downloadable else ""))
    problems: list[str] = []
    notes: list[str] = []
    if (folder / MANIFEST).is_file():
        problems += check_manifest(folder, deep=deep, quiet=quiet)
    else:
        notes.append(f"{folder} was not unpacked by translate: checked its layout and images, not checksums")
        bad = 0
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p)):
            try:
                probe(path)
            except Exception:  # noqa: BLE001 - any decoder error means unreadable
                bad += 1
                if bad <= 5:
                    problems.append(f"{path.relative_to(folder)} is not a readable image")
        if bad > 5:
            problems.append(f"... and {bad - 5} more unreadable images")
    for sub, expected in ds.counts.items():
        d = folder / sub
        if not d.is_dir():
            if sub not in ds.layout:
                notes.append(f"{sub}/ is absent (optional)")
            continue
        n = sum(1 for p in d.rglob("*") if p.is_file() and is_image_file(p))
        if n != expected:
            notes.append(f"{sub}/ has {n} images; the published set has {expected}")
    return folder, problems, notes


def info(ds: Dataset, root: str | Path | None = None) -> list[tuple[str, str]]:
    """What ``translate data info`` shows, as (field, text) rows."""
    found = locate(ds, root)
    rows = [("name", ds.name), ("kind", ds.kind), ("description", ds.description),
            ("download", ds.size_text if ds.downloadable else "manual (see below)"),
            ("on disk", str(found) if found else f"no (would go to {data_root(root) / ds.folder})"),
            ("layout", ds.layout_note)]
    for rf in ds.files:
        rows.append(("url", rf.url + (f" (also {', '.join(rf.alternates)})" if rf.alternates else "")))
        rows.append(("sha256", rf.sha256 or "not published; recorded by the first download"))
    if ds.counts:
        rows.append(("images", ", ".join(f"{k} {v:,}" for k, v in ds.counts.items())))
    if ds.classes:
        rows.append(("classes", f"{len(ds.classes)}: " + ", ".join(ds.classes)))
    for recipe in ([ds.recipe] if ds.recipe else []) + list(ds.recipes.values()):
        rows.append((f"recipe ({recipe['model']})", " ".join(f"--{k.replace('_', '-')} {v}" if k in _CLI_OPTIONS
                                                             else f"--set {k}={v}" for k, v in recipe.items())))
    rows += [("licence", ds.licence), ("citation", ds.citation)]
    if ds.homepage:
        rows.append(("homepage", ds.homepage))
    if ds.manual:
        rows.append(("how to get it", ds.manual))
    return rows


_CLI_OPTIONS = {"model", "size", "epochs", "steps", "batch_size", "lr", "gan_loss", "direction"}


def status_rows(root: str | Path | None = None) -> list[tuple[str, str, str, str]]:
    """(name, kind, download size, on disk) for every data set, for ``translate data list``."""
    rows = []
    for ds in DATASETS.values():
        found = locate(ds, root)
        rows.append((ds.name, ds.kind, ds.size_text if ds.downloadable else "manual",
                     "yes" if found else "no"))
    return rows


__all__ = ["DATASETS", "Dataset", "OfflineError", "data_root", "ensure", "get", "info", "locate", "status_rows",
           "verify"]
