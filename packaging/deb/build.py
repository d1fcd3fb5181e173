"""Builds dropwarden_<version>_<arch>.deb: a self-contained venv under /opt/dropwarden, unit, man page.

Run with the system Python of the Debian release the package is for (`/usr/bin/python3
packaging/deb/build.py`, which `make deb` does): that interpreter makes the venv and the package depends
on it (python3.X). The venv is built in a staging directory, then relocated to /opt/dropwarden the way
dh-virtualenv does it: script shebangs, pyvenv.cfg and the interpreter links are rewritten, and the build
fails if any file still names the staging path. Only the standard library is used; needs python3-venv
and dpkg-deb, not root.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import gzip
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PREFIX = "/opt/dropwarden"
PACKAGE = "dropwarden"
DEBIAN_REVISION = "1"
# OCR of the embedded default: used when installed (`[ocr] enabled = "auto"`), not needed to run.
RECOMMENDS = "tesseract-ocr, tesseract-ocr-eng, tesseract-ocr-jpn, tesseract-ocr-jpn-vert, logrotate"
DESCRIPTION = """\
drop-folder scanner: PII and secret detection, quarantine, audit
 dropwarden watches drop folders and judges every file that lands in them:
 built-in PII and secret rules (text, office documents, PDF, archives,
 images through OCR), optional vision models. Files with findings are
 quarantined, clean ones released; every decision goes to a hash-chained
 audit log and alerts to SIEM sinks.
 .
 This package is a self-contained Python environment under /opt/dropwarden
 with a hardened systemd unit. The unit is enabled on installation but only
 started once a [[watch]] is configured in /etc/dropwarden/dropwarden.toml."""


def run(*cmd: str | Path, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    return subprocess.run([str(c) for c in cmd], **kw)


def source_tree(dest: Path) -> Path:
    """A clean copy of the working tree (tracked and new, not ignored files): no build/ or egg-info."""
    names = run(
        "git", "ls-files", "-co", "--exclude-standard", "-z", cwd=REPO, capture_output=True
    ).stdout.split(b"\0")
    for name in filter(None, names):
        path = REPO / os.fsdecode(name)
        if path.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / os.fsdecode(name))
    return dest


def build_venv(venv: Path, src: Path) -> None:
    run(sys.executable, "-m", "venv", venv)
    pip = [venv / "bin" / "python", "-m", "pip", "-qq"]  # errors only
    run(*pip, "install", "--no-compile", src)
    run(*pip, "uninstall", "--yes", "pip", "setuptools")


def licences(venv: Path) -> dict[str, str]:
    """Each installed distribution's declared licence; a GPL one (any flavour) stops the build."""
    found = {}
    for meta in sorted(venv.glob("lib/python*/site-packages/*.dist-info/METADATA")):
        headers = email.parser.Parser(policy=email.policy.compat32).parsestr(
            meta.read_text(), headersonly=True
        )
        classifiers = [c.split("::")[-1].strip() for c in headers.get_all("Classifier") or [] if "Lic" in c]
        declared = headers.get("License-Expression") or "; ".join(classifiers) or headers.get("License") or ""
        found[f"{headers['Name']} {headers['Version']}"] = " ".join(declared.split())[:80] or "(not declared)"
    copyleft = ("GPL", "GENERAL PUBLIC")
    gpl = {name: lic for name, lic in found.items() if any(word in lic.upper() for word in copyleft)}
    if gpl:
        raise SystemExit(f"GPL-licensed distributions in the venv: {gpl}")
    return found


def relocate(venv: Path, python: str) -> None:
    """Make the venv built at `venv` work at PREFIX with the interpreter `python` (an absolute path)."""
    staged = str(venv).encode()
    bin_dir = venv / "bin"
    for script in bin_dir.iterdir():
        # Only the daemon's own command stays: the libraries' command-line tools (watchmedo, pygmentize,
        # ...), the interpreter links (made again below) and the activate scripts are not the package's.
        if script.name != "dropwarden":
            script.unlink()
        elif script.read_bytes().startswith(b"#!" + staged):
            script.write_bytes(script.read_bytes().replace(staged, PREFIX.encode()))
    (bin_dir / "python3").symlink_to(python)
    (bin_dir / "python").symlink_to("python3")
    cfg = venv / "pyvenv.cfg"
    stale = ("home", "executable", "command")
    lines = [line for line in cfg.read_text().splitlines() if not line.startswith(stale)]
    lines += [f"home = {Path(python).parent}", f"executable = {python}"]
    cfg.write_text("\n".join(lines) + "\n")
    for path in venv.rglob("*"):
        if path.name == "__pycache__":
            shutil.rmtree(path)
        elif path.name == "direct_url.json":
            path.unlink()  # only records where pip installed the project from (a temporary directory)
    leftover = run("grep", "-rl", "--", str(venv), venv, capture_output=True, check=False).stdout.decode()
    if leftover.strip():
        raise SystemExit(f"the venv still names its build path:\n{leftover}")


def install_file(src: Path | bytes, dest: Path, mode: int = 0o644) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(src if isinstance(src, bytes) else src.read_bytes())
    dest.chmod(mode)


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def package_files(root: Path, venv: Path, version: str, epoch: int) -> None:
    """Outside the venv: unit, sysusers, tmpfiles, logrotate, conffile, man page, completions, docs."""
    systemd = REPO / "packaging" / "systemd"
    install_file(systemd / "dropwarden.service", root / "lib/systemd/system/dropwarden.service")
    install_file(systemd / "dropwarden.sysusers", root / "usr/lib/sysusers.d/dropwarden.conf")
    install_file(systemd / "dropwarden.tmpfiles", root / "usr/lib/tmpfiles.d/dropwarden.conf")
    install_file(REPO / "packaging/logrotate/dropwarden", root / "etc/logrotate.d/dropwarden")
    install_file(REPO / "daemon/dropwarden/data/dropwarden.toml", root / "etc/dropwarden/dropwarden.toml")
    (root / "etc/dropwarden/dropwarden.d").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/dropwarden").symlink_to(f"{PREFIX}/bin/dropwarden")

    doc = root / "usr/share/doc" / PACKAGE
    install_file(systemd / "dropwarden.service.d/gpu.conf.example", doc / "examples/gpu.conf.example")
    install_file(HERE / "copyright", doc / "copyright")
    changelog = (
        f"{PACKAGE} ({version}) unstable; urgency=medium\n\n  * Package built from the source tree.\n\n"
        f" -- {maintainer()}  {format_date(epoch)}\n"
    )
    install_file(gzip_bytes(changelog.encode()), doc / "changelog.Debian.gz")
    install_file(HERE / "lintian-overrides", root / "usr/share/lintian/overrides" / PACKAGE)

    python = venv / "bin" / "python"
    man = run(python, HERE / "manpage.py", str(epoch), capture_output=True).stdout
    install_file(gzip_bytes(man), root / "usr/share/man/man1/dropwarden.1.gz")
    completions = {
        "bash_source": root / "usr/share/bash-completion/completions/dropwarden",
        "zsh_source": root / "usr/share/zsh/vendor-completions/_dropwarden",
        "fish_source": root / "usr/share/fish/vendor_completions.d/dropwarden.fish",
    }
    for shell, dest in completions.items():
        env = {**os.environ, "_DROPWARDEN_COMPLETE": shell}
        script = run(venv / "bin" / "dropwarden", env=env, capture_output=True).stdout
        install_file(script, dest)


def maintainer() -> str:
    """DEB_MAINTAINER, or the author of the commit the package is built from."""
    if os.environ.get("DEB_MAINTAINER"):
        return os.environ["DEB_MAINTAINER"]
    author = run("git", "log", "-1", "--format=%an <%ae>", cwd=REPO, capture_output=True).stdout
    return author.decode().strip()


def format_date(epoch: int) -> str:
    return run("date", "-R", "-u", "-d", f"@{epoch}", capture_output=True).stdout.decode().strip()


def control(root: Path, version: str, arch: str, python: str) -> str:
    size_kib = sum(p.lstat().st_size for p in root.rglob("*") if not p.is_dir()) // 1024
    libc = run("dpkg-query", "-W", "-f=${Version}", "libc6", capture_output=True).stdout.decode()
    libc_upstream = libc.split("-")[0]
    return (
        f"Package: {PACKAGE}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: {maintainer()}\n"
        f"Installed-Size: {size_kib}\nSection: admin\nPriority: optional\n"
        # python3.X: the venv's interpreter; libc6: its extension modules are manylinux wheels chosen for
        # this build machine's C library, so no older one; systemd: sysusers, tmpfiles and the unit.
        f"Depends: {Path(python).name}, libc6 (>= {libc_upstream}), systemd\n"
        f"Recommends: {RECOMMENDS}\n"
        f"Description: {DESCRIPTION}\n"
    )


def build(out_dir: Path, work: Path) -> Path:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    version = f"{meta['version']}-{DEBIAN_REVISION}"
    arch = run("dpkg", "--print-architecture", capture_output=True).stdout.decode().strip()
    python = f"/usr/bin/python{sysconfig.get_python_version()}"
    if sys.prefix != "/usr" or not Path(python).exists():
        raise SystemExit(f"run this with the system Python (/usr/bin/python3), not {sys.executable}")
    epoch = int(
        os.environ.get("SOURCE_DATE_EPOCH")
        or run("git", "log", "-1", "--format=%ct", cwd=REPO, capture_output=True).stdout.decode().strip()
        or 0
    )

    root = work / "root"
    venv = root / PREFIX.lstrip("/")
    build_venv(venv, source_tree(work / "src"))
    for name, licence in licences(venv).items():
        print(f"  {name}: {licence}", file=sys.stderr)
    package_files(root, venv, version, epoch)
    relocate(venv, python)

    debian = root / "DEBIAN"
    debian.mkdir()
    (debian / "control").write_text(control(root, version, arch, python))
    (debian / "conffiles").write_text("/etc/dropwarden/dropwarden.toml\n/etc/logrotate.d/dropwarden\n")
    for script in ("postinst", "prerm", "postrm"):
        install_file(HERE / script, debian / script, 0o755)
    for path in root.rglob("*"):  # independent of the builder's umask
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or path.stat().st_mode & 0o111 else 0o644)
    for path in (venv / "lib").rglob("*"):  # libraries: extension modules need no execute bit
        if path.is_file() and not path.is_symlink():
            path.chmod(0o644)
    for script in ("postinst", "prerm", "postrm"):
        (debian / script).chmod(0o755)

    out_dir.mkdir(parents=True, exist_ok=True)
    deb = out_dir / f"{PACKAGE}_{version}_{arch}.deb"
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
    run("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, deb, env=env, stdout=subprocess.DEVNULL)
    return deb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO, help="where the .deb goes (default: here)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dropwarden-deb-") as work:
        print(build(args.out.resolve(), Path(work)))


if __name__ == "__main__":
    main()
