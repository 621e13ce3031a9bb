#!/usr/bin/env python3
"""Writes a C file holding the given files (approvald-web's /static/ assets) as byte arrays:
struct p11g_web_asset p11g_web_assets[] = {{"/static/NAME", type, bytes, length}, ...}."""
import os
import sys

TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
out, files = sys.argv[1], sys.argv[2:]
lines = ['#include "approvald/web_static.h"', ""]
entries = []
for i, path in enumerate(files):
    data = open(path, "rb").read()
    name = os.path.basename(path)
    lines.append("static const unsigned char asset_%d[] = {" % i)
    for j in range(0, len(data), 16):
        lines.append("\t" + ", ".join("0x%02x" % b for b in data[j:j + 16]) + ",")
    lines.append("};")
    entries.append('\t{"/static/%s", "%s", asset_%d, sizeof(asset_%d)},'
                   % (name, TYPES[os.path.splitext(name)[1]], i, i))
lines.append("const struct p11g_web_asset p11g_web_assets[] = {")
lines += entries
lines.append("\t{0, 0, 0, 0},")
lines.append("};")
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
