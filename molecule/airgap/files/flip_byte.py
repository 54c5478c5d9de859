"""Flip one byte inside the data of a tar member (a stand-in for a damaged or tampered medium).
Prints the member's name.

    python3 flip_byte.py SEGMENT.tar                  the first member of that segment
    python3 flip_byte.py MEDIA_DIR --member PREFIX    the first member, in any segment, whose
                                                      name starts with PREFIX
"""
import os
import sys
import tarfile

if len(sys.argv) == 4 and sys.argv[2] == "--member":
    segments = sorted(os.path.join(sys.argv[1], n) for n in os.listdir(sys.argv[1]) if n.endswith(".tar"))
    prefix = sys.argv[3]
else:
    segments, prefix = [sys.argv[1]], ""
for seg in segments:
    with tarfile.open(seg) as t:
        member = next((m for m in t.getmembers() if m.isreg() and m.size > 16 and m.name.startswith(prefix)), None)
    if member is None:
        continue
    with open(seg, "r+b") as f:
        f.seek(member.offset_data + member.size // 2)
        b = f.read(1)
        f.seek(member.offset_data + member.size // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    print(member.name)
    break
else:
    sys.exit("no member starting with %r in %s" % (prefix, segments))
