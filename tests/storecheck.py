"""Checks on what a store holds, read with plain h5py (independent of chronompi's reader)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np


def read_h5(store: Path) -> dict[tuple[str, str], list[tuple[int, int, int, bytes]]]:
    """Every event of every closed segment: {(chronicle, story): [(time, client, seq, payload)]}."""
    out: dict[tuple[str, str], list[tuple[int, int, int, bytes]]] = defaultdict(list)
    for path in sorted((store / "segments").glob("*.h5")):
        with h5py.File(path, "r") as f:
            assert f.attrs["schema"] == 2  # checksums (docs/format.md)
            for chron in f:
                for story in f[chron]:
                    g = f[chron][story]
                    ev = g["events"][...]
                    payload = g["payload"][...].tobytes()
                    index = g["windows"][...]
                    # the windows index covers every row exactly once, and runs are sorted
                    covered = np.zeros(len(ev), int)
                    for w in index:
                        a, n = int(w["first_row"]), int(w["n_rows"])
                        covered[a : a + n] += 1
                        run = ev[a : a + n]
                        assert run["time"][0] == w["t_min"] and run["time"][-1] == w["t_max"]
                        keys = list(zip(run["time"].tolist(), run["client"].tolist(), run["seq"].tolist()))
                        assert keys == sorted(keys), f"run of window {w['window']} not sorted"
                    assert np.all(covered == 1), "windows index does not cover each row exactly once"
                    for e in ev:
                        o, n = int(e["offset"]), int(e["length"])
                        out[(chron, story)].append(
                            (int(e["time"]), int(e["client"]), int(e["seq"]), payload[o : o + n])
                        )
    return out


def load_expected(outdir: Path) -> dict[int, tuple[np.ndarray, list[tuple[str, str]]]]:
    exp = {}
    for p in outdir.glob("expected-*.npy"):
        cid = int(p.stem.split("-")[1], 16)
        names = [tuple(x) for x in json.loads((outdir / f"names-{cid:016x}.json").read_text())]
        exp[cid] = (np.load(p), names)
    return exp


def check_store(store: Path, outdir: Path) -> int:
    """Assert the store holds exactly what the clients logged; return the event count."""
    got = read_h5(store)
    expected = load_expected(outdir)
    assert expected, "no client wrote its expected events"
    want: dict[tuple[int, int], tuple[str, str, int, bytes]] = {}
    for cid, (arr, names) in expected.items():
        for row in arr:
            c, s = names[int(row["story"])]
            key = (cid, int(row["time"]))
            assert key not in want, "a client returned the same timestamp twice"
            want[key] = (c, s, int(row["length"]), row["digest"].tobytes())
    seen: set[tuple[int, int]] = set()
    for (chron, story), rows in got.items():
        per_client: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for t, cid, seq, payload in rows:
            key = (cid, t)
            assert key in want, f"{chron}/{story}: event (client {cid:x}, time {t}) was never logged"
            assert key not in seen, f"{chron}/{story}: event (client {cid:x}, time {t}) stored twice"
            seen.add(key)
            c, s, n, digest = want[key]
            assert (c, s) == (chron, story), f"event logged to {c}/{s} stored in {chron}/{story}"
            assert len(payload) == n and hashlib.blake2b(payload, digest_size=16).digest() == digest, (
                f"{chron}/{story}: payload of (client {cid:x}, time {t}) differs"
            )
            per_client[cid].append((t, seq))
        for cid, ts in per_client.items():
            ts.sort()
            seqs = [s for _, s in ts]
            assert seqs == list(range(len(seqs))), f"{chron}/{story} client {cid:x}: seq not dense from 0 in time order"
    missing = set(want) - seen
    assert not missing, f"{len(missing)} logged events are missing from the store, e.g. {sorted(missing)[:3]}"
    return len(seen)


def check_reader(store: Path) -> int:
    """open_store() replays agree with the raw file contents and are in total order."""
    import chronompi

    raw = read_h5(store)
    n = 0
    with chronompi.open_store(store) as st:
        assert sorted(st.chronicles()) == sorted({c for c, _ in raw})
        for (chron, story), rows in raw.items():
            assert story in st.stories(chron)
            ev = st.replay(chron, story)
            keys = list(zip(ev["time"].tolist(), ev["client"].tolist(), ev["seq"].tolist()))
            assert keys == sorted(keys), f"{chron}/{story}: replay not in total order"
            assert len(set(keys)) == len(keys)
            replayed = list(zip(ev["time"].tolist(), ev["client"].tolist(), ev["seq"].tolist(), ev["payload"].tolist()))
            assert replayed == sorted(rows), f"{chron}/{story}: replay differs from the stored rows"
            n += len(ev)
    return n


def sqlite_tables(db: Path, tables: tuple[str, ...] | list[str]) -> dict[str, list[tuple[object, ...]]]:
    """Every row of each of ``tables`` in SQLite database ``db``, sorted (to compare two databases)."""
    con = sqlite3.connect(db)
    try:
        return {t: sorted(con.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
    finally:
        con.close()
