#!/usr/bin/env python3
"""Measure the gzip backends umoci_py.compress chooses between (run with the venv python)."""
import json, time, zlib, sys
from isal import isal_zlib
from zlib_ng import zlib_ng
L="/var/cache/orca-fixtures/debian"
idx=json.load(open(L+"/index.json")); m=json.load(open(L+"/blobs/sha256/"+idx["manifests"][0]["digest"][7:]))
blob=open(L+"/blobs/sha256/"+m["layers"][0]["digest"][7:],"rb").read()
raw=zlib.decompress(blob,31)
print("compressed",len(blob),"raw",len(raw))
for name,mod,level in [("zlib",zlib,6),("zlib-ng",zlib_ng,6),("zlib-ng",zlib_ng,1),("isal",isal_zlib,3),("isal",isal_zlib,1)]:
    t=time.perf_counter(); d=mod.decompressobj(31); out=d.decompress(blob); td=time.perf_counter()-t
    t=time.perf_counter(); c=mod.compressobj(level,mod.DEFLATED,31); z=c.compress(raw)+c.flush(); tc=time.perf_counter()-t
    print(f"{name:8} L{level} decompress {td:.2f}s compress {tc:.2f}s size {len(z)/len(raw):.3f}")
