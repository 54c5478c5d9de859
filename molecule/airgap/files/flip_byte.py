"""Flip one byte inside the data of the first member of a tar segment (a stand-in for a damaged
or tampered medium). Prints the member's name.

    python3 flip_byte.py SEGMENT.tar
"""
import sys
import tarfile

with tarfile.open(sys.argv[1]) as t:
    member = next(m for m in t.getmembers() if m.isreg() and m.size > 16)
with open(sys.argv[1], "r+b") as f:
    f.seek(member.offset_data + member.size // 2)
    b = f.read(1)
    f.seek(member.offset_data + member.size // 2)
    f.write(bytes([b[0] ^ 0xFF]))
print(member.name)
