#!/usr/bin/env python3
"""Regenerates tests/vectors/bucketing.json with the reference XXH3 implementation
(PyPI `xxhash`), independent of the Rust code under test.

bucket = XXH3_64(unit_utf8, seed=XXH3_64(salt_utf8, seed=0)) mod 10000
"""
import json
import sys

import xxhash  # pip install xxhash


def bucket(salt: str, unit: str) -> int:
    seed = xxhash.xxh3_64_intdigest(salt.encode("utf-8"))
    return xxhash.xxh3_64_intdigest(unit.encode("utf-8"), seed=seed) % 10000


salts = ["", "banner.split", "banner-asia-3way", "home-layer-2026q4", "elvon.holdout", "rollout/新功能", "a" * 300]
units = ["", "user-0", "user-1", "user-42", "user-99999", "device-7f3a9c", "12345", "-9", "ユーザー", "x" * 129, "user@example.com"]
vectors = [{"salt": s, "unit": u, "bucket": bucket(s, u)} for s in salts for u in units]
json.dump({"algorithm": "bucket = XXH3_64(unit, seed = XXH3_64(salt)) mod 10000", "vectors": vectors},
          sys.stdout, ensure_ascii=False, indent=1)
print()
