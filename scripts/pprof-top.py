#!/usr/bin/env python3
"""The top functions of a Go CPU profile (gzipped pprof, as `runsc
--profile-cpu` writes), flat or cumulative, without Go's toolchain (none
here): a minimal reader of pprof's protobuf (profile.proto fields 1 sample
types, 2 samples, 4 locations, 5 functions, 6 strings).

usage: scripts/pprof-top.py PROFILE [flat|cum] [N] [--match SUBSTRING]
"""

import argparse
import gzip
from collections import Counter


def varint(data: bytes, at: int):
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def fields(message: bytes):
    """(field number, wire type, value) of each field of a message."""
    at = 0
    while at < len(message):
        key, at = varint(message, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = varint(message, at)
        elif wire == 2:
            size, at = varint(message, at)
            value, at = message[at : at + size], at + size
        elif wire == 1:
            value, at = message[at : at + 8], at + 8
        elif wire == 5:
            value, at = message[at : at + 4], at + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def integers(wire: int, value):
    """A repeated integer field, packed or not."""
    if wire == 0:
        return [value]
    out, at = [], 0
    while at < len(value):
        number, at = varint(value, at)
        out.append(number)
    return out


def read_profile(path: str):
    """(samples as (location ids, values), location id -> function ids,
    function id -> name)."""
    data = gzip.decompress(open(path, "rb").read())
    strings, samples, locations, names = [], [], {}, {}
    for number, wire, value in fields(data):
        if number == 2:
            ids, values = [], []
            for n, w, v in fields(value):
                if n == 1:
                    ids += integers(w, v)
                elif n == 2:
                    values += integers(w, v)
            samples.append((ids, values))
        elif number == 4:
            location, functions = 0, []
            for n, _, v in fields(value):
                if n == 1:
                    location = v
                elif n == 4:
                    functions += [f for m, _, f in fields(v) if m == 1]
            locations[location] = functions
        elif number == 5:
            function = name = 0
            for n, _, v in fields(value):
                if n == 1:
                    function = v
                elif n == 2:
                    name = v
            names[function] = name
        elif number == 6:
            strings.append(value.decode())
    return samples, locations, {f: strings[n] for f, n in names.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("order", nargs="?", choices=["flat", "cum"], default="flat")
    parser.add_argument("count", nargs="?", type=int, default=30)
    parser.add_argument("--match", default="", help="only functions whose name contains this")
    args = parser.parse_args()
    samples, locations, names = read_profile(args.profile)
    flat, cumulative, total = Counter(), Counter(), 0
    for ids, values in samples:
        nanoseconds = values[-1]  # the last sample type: cpu nanoseconds
        total += nanoseconds
        stack = [names[f] for location in ids for f in locations.get(location, [])]
        if stack:
            flat[stack[0]] += nanoseconds
        for name in set(stack):
            cumulative[name] += nanoseconds
    print(f"sampled CPU time: {total / 1e9:.2f} s")
    ranking = flat if args.order == "flat" else cumulative
    shown = [(n, v) for n, v in ranking.most_common() if args.match in n][: args.count]
    for name, nanoseconds in shown:
        print(f"{100 * nanoseconds / total:5.1f}%  {nanoseconds / 1e9:6.2f} s  {name}")


if __name__ == "__main__":
    main()
