"""The client's build backend (PEP 517), in the standard library alone.

``pip install ./clients/python`` needs nothing from a package index: pip finds this backend in
the source tree (``backend-path`` in pyproject.toml) and it builds a pure-Python wheel of
``run_ledger`` with ``zipfile``. The metadata is read from ``[project]`` in pyproject.toml.
Editable installs (``pip install -e``) put the source folder on the path with a ``.pth`` file.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "run_ledger"


def _project() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return dict(tomllib.load(f)["project"])


def _names() -> tuple[str, str]:
    project = _project()
    return project["name"].replace("-", "_"), project["version"]


def _metadata() -> str:
    project = _project()
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project.get('description', '')}",
        f"Requires-Python: {project.get('requires-python', '>=3.11')}",
    ]
    lines += [f"Classifier: {c}" for c in project.get("classifiers", [])]
    lines += [f"Requires-Dist: {d}" for d in project.get("dependencies", [])]
    readme = project.get("readme")
    if readme:
        lines.append("Description-Content-Type: text/markdown")
        return "\n".join(lines) + "\n\n" + (ROOT / readme).read_text(encoding="utf-8")
    return "\n".join(lines) + "\n"


def _dist_info() -> str:
    name, version = _names()
    return f"{name}-{version}.dist-info"


def _wheel_name() -> str:
    name, version = _names()
    return f"{name}-{version}-py3-none-any.whl"


def _dist_info_files() -> dict[str, bytes]:
    info = _dist_info()
    return {
        f"{info}/METADATA": _metadata().encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: run_ledger _build/backend.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/top_level.txt": f"{PACKAGE}\n".encode(),
    }


def _write_wheel(directory: str, files: dict[str, bytes]) -> str:
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record_path = f"{_dist_info()}/RECORD"
    record.append(f"{record_path},,")
    files = {**files, record_path: ("\n".join(record) + "\n").encode()}
    target = Path(directory) / _wheel_name()
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for path, data in files.items():
            wheel.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return target.name


def _package_files() -> dict[str, bytes]:
    files = {}
    for path in sorted((ROOT / PACKAGE).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files[path.relative_to(ROOT).as_posix()] = path.read_bytes()
    return files


def get_requires_for_build_wheel(config_settings: Optional[dict[str, Any]] = None) -> list[str]:
    return []


def get_requires_for_build_editable(config_settings: Optional[dict[str, Any]] = None) -> list[str]:
    return []


def get_requires_for_build_sdist(config_settings: Optional[dict[str, Any]] = None) -> list[str]:
    return []


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: Optional[dict[str, Any]] = None) -> str:
    for path, data in _dist_info_files().items():
        target = Path(metadata_directory) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return _dist_info()


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory: str, config_settings: Optional[dict[str, Any]] = None,
                metadata_directory: Optional[str] = None) -> str:
    return _write_wheel(wheel_directory, {**_package_files(), **_dist_info_files()})


def build_editable(wheel_directory: str, config_settings: Optional[dict[str, Any]] = None,
                   metadata_directory: Optional[str] = None) -> str:
    pth = f"{ROOT}\n".encode()
    return _write_wheel(wheel_directory, {f"_{PACKAGE}_editable.pth": pth, **_dist_info_files()})


def build_sdist(sdist_directory: str, config_settings: Optional[dict[str, Any]] = None) -> str:
    name, version = _names()
    base = f"{name}-{version}"
    target = Path(sdist_directory) / f"{base}.tar.gz"
    sources = {"pyproject.toml": (ROOT / "pyproject.toml").read_bytes(), "README.md": (ROOT / "README.md").read_bytes(),
               "_build/backend.py": Path(__file__).read_bytes(), **_package_files()}
    sources["PKG-INFO"] = _metadata().encode()
    with tarfile.open(target, "w:gz") as sdist:
        for path, data in sources.items():
            member = tarfile.TarInfo(f"{base}/{path}")
            member.size = len(data)
            member.mtime = 1577836800
            sdist.addfile(member, io.BytesIO(data))
    return target.name
