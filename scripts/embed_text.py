#!/usr/bin/env python3
"""Embeds a text file in a C++ header as a string_view constant (used at build time)."""
import sys

name, src, dst = sys.argv[1:4]
text = open(src, encoding="utf-8").read()
delim = "shroud_embed"
if f"){delim}\"" in text:
    sys.exit(f"{src}: contains the raw-string delimiter")
with open(dst, "w", encoding="utf-8") as out:
    out.write("// Generated from %s by scripts/embed_text.py. Do not edit.\n" % src)
    out.write("#pragma once\n#include <string_view>\n")
    out.write(f'inline constexpr std::string_view {name} = R"{delim}({text}){delim}";\n')
