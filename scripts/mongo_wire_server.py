#!/usr/bin/env python3
"""A small MongoDB wire-protocol server for tests, built on mockupdb.

It serves read-only data loaded from mongoexport-style JSON-lines files so
that libmongoc (and pymongo) can talk to a real peer over TCP. It answers the
handshake, ping, buildInfo, endSessions, find, getMore and killCursors;
every other command gets MongoDB's "no such command" error. Filters may use
field equality, $eq, $in, $regex (with $options i, m, s, x) and a top-level
$and; find may sort. Anything else is refused with BadValue.

    python scripts/mongo_wire_server.py --dir DIR [--host 127.0.0.1]
        [--port 0] [--database NAME] [--delay-ms N] [--log-commands FILE]

Prints "LISTENING <port>" on stdout once it accepts connections. With
--log-commands, every command received is appended to FILE as one line of
relaxed Extended JSON, so a test can check what a client really sent.
"""
import argparse
import datetime
import pathlib
import random
import re
import signal
import sys
import threading
import traceback

from test_server_lifecycle import exit_with_parent, unblock_termination_signals

import bson
from bson import json_util
from bson.int64 import Int64
from bson.objectid import ObjectId
from mockupdb import MockupDB, OP_MSG_FLAGS, OpGetMore, OpMsg, OpQuery

MAX_BSON_SIZE = 16 * 1024 * 1024
DEFAULT_FIRST_BATCH = 101  # what mongod returns in a first batch by default
MAX_WIRE_VERSION = 17  # MongoDB 6.0, matching the buildInfo version below


class CommandError(Exception):
    def __init__(self, code, code_name, errmsg):
        super().__init__(errmsg)
        self.code, self.code_name, self.errmsg = code, code_name, errmsg


def bad_value(msg):
    return CommandError(2, "BadValue", msg)


def load_collections(directory):
    """Each DIR/NAME.json holds one Extended JSON document per line."""
    if not pathlib.Path(directory).is_dir():
        sys.exit(f"--dir {directory}: not a directory")
    collections = {}
    for path in sorted(pathlib.Path(directory).glob("*.json")):
        docs = []
        for lineno, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                doc = json_util.loads(line)
            except Exception as exc:
                sys.exit(f"{path}:{lineno}: not Extended JSON: {exc}")
            if not isinstance(doc, dict):
                sys.exit(f"{path}:{lineno}: not a JSON object")
            if "_id" not in doc:  # an insert would add one, and put it first
                doc = {"_id": ObjectId(), **doc}
            docs.append(doc)
        collections[path.stem] = docs
    return collections


# --- query semantics -------------------------------------------------------

def same(a, b):
    # MongoDB never treats true as 1, but Python does.
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def field_equals(doc, field, value):
    if field not in doc:
        return value is None  # {field: null} matches a missing field
    actual = doc[field]
    if same(actual, value):
        return True
    # Equality on an array field also matches any one element.
    return isinstance(actual, list) and any(same(x, value) for x in actual)


REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL,
               "x": re.VERBOSE}


def compile_regex(field, cond):
    """{$regex: pattern, $options: flags} as a compiled Python pattern."""
    pattern, options = cond["$regex"], cond.get("$options", "")
    if not isinstance(pattern, str) or not isinstance(options, str):
        raise bad_value(f"$regex and $options of {field} must be strings")
    if any(o not in REGEX_FLAGS for o in options):
        raise bad_value(f"unsupported $options {options!r}")
    flags = 0
    for option in options:
        flags |= REGEX_FLAGS[option]
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise CommandError(51091, "Location51091",
                           f"Regular expression is invalid: {exc}") from exc


def field_condition(field, cond):
    """One field's condition: equality, $eq, $in or $regex (+ $options)."""
    if not (isinstance(cond, dict) and any(k.startswith("$") for k in cond)):
        return lambda doc: field_equals(doc, field, cond)
    ops = set(cond)
    if ops == {"$eq"}:
        return lambda doc: field_equals(doc, field, cond["$eq"])
    if ops == {"$in"}:
        if not isinstance(cond["$in"], list):
            raise bad_value("$in needs an array")
        return lambda doc: any(field_equals(doc, field, v) for v in cond["$in"])
    if ops in ({"$regex"}, {"$regex", "$options"}):
        regex = compile_regex(field, cond)
        return lambda doc: (isinstance(doc.get(field), str)
                            and regex.search(doc[field]) is not None)
    raise bad_value(f"unsupported operator in {field}: {sorted(ops)}")


def compile_filter(flt):
    """Turn a filter into a predicate doc -> bool. Field equality, $eq, $in,
    $regex and a top-level $and are understood; anything else is refused,
    so a test never passes against a filter this server silently ignored."""
    parts = []
    for field, cond in flt.items():
        if field == "$and":
            if not isinstance(cond, list) or not cond:
                raise bad_value("$and must be a nonempty array")
            parts.extend(compile_filter(sub) for sub in cond)
        elif field.startswith("$"):
            raise bad_value(f"unsupported top-level operator {field}")
        else:
            parts.append(field_condition(field, cond))
    return lambda doc: all(part(doc) for part in parts)


# MongoDB's order between types (simplified to the types the fixtures hold).
TYPE_ORDER = [(type(None), 0), (bool, 8), ((int, float), 1), (str, 2),
              (dict, 3), (list, 4), (ObjectId, 7), (datetime.datetime, 9)]


def sort_key(value):
    for kind, rank in TYPE_ORDER:
        if isinstance(value, kind):
            return (rank, value) if value is not None else (rank, 0)
    return (10, str(value))


def sort_docs(docs, spec):
    """Sort as `find` does: by each field of `spec` in turn (1 or -1);
    a missing field sorts as null, first when ascending."""
    if not spec:
        return docs
    for field, direction in reversed(list(spec.items())):
        if direction not in (1, -1):
            raise bad_value(f"sort direction of {field} must be 1 or -1")
        docs = sorted(docs, key=lambda d: sort_key(d.get(field)),
                      reverse=direction == -1)
    return docs


def compile_projection(proj):
    """Return a function doc -> projected doc."""
    if not proj:
        return lambda doc: doc
    for field, flag in proj.items():
        if isinstance(flag, (dict, str, list)):
            raise bad_value(f"unsupported projection for {field}")
    keep_id = bool(proj.get("_id", True))
    included = {f for f, v in proj.items() if v and f != "_id"}
    excluded = {f for f, v in proj.items() if not v and f != "_id"}
    if included and excluded:
        raise CommandError(31254, "Location31254",
                           f"Cannot do exclusion on field {min(excluded)} "
                           "in inclusion projection")
    if included or (proj.get("_id") and not excluded):
        wanted = included | ({"_id"} if keep_id else set())
        return lambda doc: {k: v for k, v in doc.items() if k in wanted}
    dropped = excluded | (set() if keep_id else {"_id"})
    return lambda doc: {k: v for k, v in doc.items() if k not in dropped}


def as_int(cmd, key, default):
    value = cmd.get(key, default)
    if value is None or isinstance(value, bool):
        return default
    if not isinstance(value, (int, float)):
        raise bad_value(f"{key} must be a number")
    return int(value)


def take_batch(docs, count):
    """Split off up to `count` docs (None: no count) whose size fits 16 MiB,
    at least one, as mongod does."""
    size, n = 0, 0
    limit = len(docs) if count is None else min(count, len(docs))
    while n < limit:
        size += len(bson.encode(docs[n]))
        if n and size > MAX_BSON_SIZE:
            break
        n += 1
    return docs[:n], docs[n:]


# --- the server ------------------------------------------------------------

class WireServer:
    def __init__(self, collections, database, delay_ms, command_log=None):
        self.collections = collections
        self.database = database
        self.delay = delay_ms / 1000.0
        self.command_log = command_log
        self.log_lock = threading.Lock()
        self.cursors = {}  # id -> {"ns", "docs" (remaining), "batch_size"}
        self.handlers = {
            "hello": self.hello, "ismaster": self.hello, "ping": self.ok,
            "buildinfo": self.build_info, "endsessions": self.ok,
            "find": self.find, "getmore": self.get_more,
            "killcursors": self.kill_cursors,
        }

    def docs_for(self, db, coll):
        if self.database is not None and db != self.database:
            return []
        return self.collections.get(coll, [])

    def hello(self, name, cmd, db):
        # No topologyVersion: clients then poll instead of streaming hello.
        # Real servers answer "hello" with isWritablePrimary and the legacy
        # names with ismaster; helloOk lets drivers switch to hello.
        primary = "isWritablePrimary" if name.lower() == "hello" else "ismaster"
        return {primary: True, "helloOk": True,
                "maxBsonObjectSize": MAX_BSON_SIZE,
                "maxMessageSizeBytes": 48000000, "maxWriteBatchSize": 100000,
                "localTime": datetime.datetime.now(datetime.timezone.utc),
                "logicalSessionTimeoutMinutes": 30,
                "minWireVersion": 0, "maxWireVersion": MAX_WIRE_VERSION,
                "readOnly": False}

    def ok(self, name, cmd, db):
        return {}

    def build_info(self, name, cmd, db):
        return {"version": "6.0.0", "versionArray": [6, 0, 0, 0],
                "gitVersion": "mockupdb", "bits": 64,
                "maxBsonObjectSize": MAX_BSON_SIZE}

    def find(self, name, cmd, db):
        coll = str(cmd[name])
        ns = f"{db}.{coll}"
        flt = cmd.get("filter") or {}
        matches = compile_filter(flt)
        project = compile_projection(cmd.get("projection"))
        skip = as_int(cmd, "skip", 0)
        limit = as_int(cmd, "limit", 0)
        batch_size = as_int(cmd, "batchSize", None)
        single = bool(cmd.get("singleBatch", False))
        if skip < 0:
            raise bad_value("skip value must be non-negative")
        if batch_size is not None and batch_size < 0:
            raise bad_value("batchSize value must be non-negative")
        if limit < 0:  # legacy meaning: one batch of at most -limit docs
            limit, single = -limit, True
        hits = sort_docs([d for d in self.docs_for(db, coll) if matches(d)],
                         cmd.get("sort") or {})
        hits = [project(d) for d in hits[skip:]]
        if limit:
            hits = hits[:limit]
        first = DEFAULT_FIRST_BATCH if batch_size is None else batch_size
        batch, rest = take_batch(hits, first)
        cursor_id = 0
        if rest and not single:
            cursor_id = random.randint(1, 2**63 - 1)  # like mongod: not guessable
            self.cursors[cursor_id] = {"ns": ns, "docs": rest,
                                       "batch_size": batch_size}
        return {"cursor": {"firstBatch": batch, "id": Int64(cursor_id),
                           "ns": ns}}

    def get_more(self, name, cmd, db):
        cursor_id = cmd[name]
        ns = f"{db}.{cmd.get('collection')}"
        cursor = self.cursors.get(cursor_id)
        if cursor is None:
            raise CommandError(43, "CursorNotFound",
                               f"cursor id {cursor_id} not found")
        if cursor["ns"] != ns:
            raise CommandError(13, "Unauthorized",
                               f"Requested getMore on namespace '{ns}', but "
                               f"cursor belongs to '{cursor['ns']}'")
        size = as_int(cmd, "batchSize", cursor["batch_size"])
        batch, cursor["docs"] = take_batch(cursor["docs"], size or None)
        if not cursor["docs"]:
            del self.cursors[cursor_id]
            cursor_id = 0
        return {"cursor": {"nextBatch": batch, "id": Int64(cursor_id),
                           "ns": ns}}

    def kill_cursors(self, name, cmd, db):
        killed, missing = [], []
        for cursor_id in cmd.get("cursors", []):
            found = self.cursors.pop(cursor_id, None) is not None
            (killed if found else missing).append(Int64(cursor_id))
        return {"cursorsKilled": killed, "cursorsNotFound": missing,
                "cursorsAlive": [], "cursorsUnknown": []}

    def handle(self, request):
        """mockupdb calls this for every request; returning True marks it
        handled so nothing piles up in mockupdb's unanswered queue."""
        if isinstance(request, OpMsg):
            if request.flags & OP_MSG_FLAGS["moreToCome"]:
                return True  # the client expects no reply
            cmd, db = request.doc, request.namespace
        elif request.is_command:  # legacy OP_QUERY on db.$cmd (handshake)
            cmd, db = request.doc, request.namespace
            if "$query" in cmd:  # wrapped to carry $readPreference
                cmd = cmd["$query"]
        elif isinstance(request, (OpQuery, OpGetMore)):  # these want OP_REPLY
            return request.fail("legacy opcodes are not supported")
        else:
            return True  # legacy writes and OP_KILL_CURSORS get no reply
        name = next(iter(cmd), "")
        self.record(cmd, db)
        handler = self.handlers.get(name.lower())
        delay = self.delay if name.lower() == "find" else 0
        try:
            if handler is None:
                raise CommandError(59, "CommandNotFound",
                                   f"no such command: {name}")
            reply = {**handler(name, cmd, db), "ok": 1.0}
        except CommandError as err:
            reply = {"ok": 0.0, "errmsg": err.errmsg, "code": err.code,
                     "codeName": err.code_name}
        except Exception as exc:  # a bug here: say so to the client and log
            traceback.print_exc()
            reply = {"ok": 0.0, "errmsg": f"mongo_wire_server: {exc!r}",
                     "code": 1, "codeName": "InternalError"}
        if delay:
            # Reply from a timer thread: mockupdb holds one lock while a
            # handler runs, so sleeping here would stall every connection.
            timer = threading.Timer(delay, self.send, (request, reply))
            timer.daemon = True
            timer.start()
        else:
            self.send(request, reply)
        return True

    def record(self, cmd, db):
        if self.command_log is None:
            return
        line = json_util.dumps({"$db": db, **cmd},
                               json_options=json_util.RELAXED_JSON_OPTIONS)
        with self.log_lock, open(self.command_log, "a", encoding="utf-8") as log:
            log.write(line + "\n")

    @staticmethod
    def send(request, reply):
        try:
            request.replies(reply)
        except OSError:
            pass  # the client hung up first (e.g. it timed out); fine


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True,
                        help="folder of NAME.json JSON-lines files")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: pick a free one")
    parser.add_argument("--database",
                        help="serve data only in this database (default: any)")
    parser.add_argument("--delay-ms", type=int, default=0,
                        help="delay every find reply by this many ms")
    parser.add_argument("--log-commands", metavar="FILE",
                        help="append every command received to FILE (JSON lines)")
    args = parser.parse_args()
    unblock_termination_signals()

    wire = WireServer(load_collections(args.dir), args.database, args.delay_ms,
                      args.log_commands)
    server = MockupDB(port=args.port)
    # MockupDB has no host option and binds "localhost"; set the address it binds.
    server._address = (args.host, args.port)
    server.autoresponds(wire.handle)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    port = server.run()
    exit_with_parent()
    print(f"LISTENING {port}", flush=True)
    stop.wait()
    # No server.stop(): it waits about 2 s for mockupdb's threads. Its threads
    # are daemons, so exiting now closes every socket at once.


if __name__ == "__main__":
    main()
