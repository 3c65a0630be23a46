"""Lists the files of installed Debian packages and their dependency closure, for `docker import`.

Usage: python3 closure.py PKG... > file-list   (paths relative to /, merged-usr normalised)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

SKIP = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/locale/", "/usr/share/info/", "/usr/share/lintian/")
MERGED = {"/bin/": "/usr/bin/", "/sbin/": "/usr/sbin/", "/lib/": "/usr/lib/", "/lib64/": "/usr/lib64/"}


def query(pkg: str, field: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${" + field + "}", pkg], capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else ""


def closure(roots: list[str]) -> list[str]:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        if not query(pkg, "Status").endswith("installed"):
            alt = f"{pkg}:{arch}"
            if query(alt, "Status").endswith("installed"):
                pkg = alt
            else:
                continue
        seen.add(pkg)
        deps = query(pkg, "Pre-Depends") + "," + query(pkg, "Depends")
        for group in deps.split(","):
            # Take the first installed alternative of "a | b".
            for alt in group.split("|"):
                name = re.sub(r"\(.*?\)|:any|\s", "", alt)
                if name and query(name, "Status").endswith("installed"):
                    todo.append(name)
                    break
    return sorted(seen)


def main() -> None:
    files: set[str] = set()
    for pkg in closure(sys.argv[1:]):
        listed = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True).stdout.splitlines()
        for path in listed:
            is_dir = os.path.isdir(path) and not os.path.islink(path)
            if path.startswith(SKIP) or not os.path.lexists(path) or is_dir:
                continue
            for old, new in MERGED.items():
                if path.startswith(old) and os.path.islink(old.rstrip("/")):
                    path = new + path[len(old) :]
            if os.path.lexists(path):
                files.add(path)
    for extra in ("/etc/passwd", "/etc/group", "/etc/ssl/certs/ca-certificates.crt"):
        if os.path.exists(extra):
            files.add(extra)
    # Debian compiles the standard library in postinst: those .pyc files are not in `dpkg -L`.
    for root, _dirs, names in os.walk("/usr/lib/python3.11"):
        if "site-packages" in root or "dist-packages" in root:
            continue
        files.update(os.path.join(root, n) for n in names if n.endswith(".cpython-311.pyc"))
    for link in ("/bin", "/sbin", "/lib", "/lib64"):
        if os.path.islink(link):
            files.add(link)
    for path in sorted(files):
        print(path.lstrip("/"))


if __name__ == "__main__":
    main()
