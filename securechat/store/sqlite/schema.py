"""The SQLite schema: ordered migrations and the search index's setup.

``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1`` inside one
transaction (``PRAGMA user_version`` holds the version), so a crash
mid-upgrade leaves the old version intact. Migrations are history: never edit
one that has shipped, add the next.
"""

from __future__ import annotations

__all__ = ["FTS_SETUP", "FTS_UNTRIGGER", "MIGRATIONS", "SCHEMA_VERSION"]

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE accounts (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            name_fold TEXT NOT NULL UNIQUE,
            password TEXT,
            created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )""",
    ),
    (
        "ALTER TABLE accounts ADD COLUMN keep_history INTEGER NOT NULL DEFAULT 1",
        # Ids are assigned by the writer, not by SQLite, so that messages that are
        # never stored (opt-out, /nolog) still get unique, increasing ids.
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            sender INTEGER NOT NULL REFERENCES accounts(id),
            room TEXT,
            room_name TEXT,
            recipient INTEGER REFERENCES accounts(id),
            pair TEXT,
            text TEXT NOT NULL,
            CHECK ((room IS NULL) = (recipient IS NOT NULL))
        )""",
        "CREATE INDEX messages_by_room ON messages(room, id) WHERE room IS NOT NULL",
        "CREATE INDEX messages_by_pair ON messages(pair, id) WHERE pair IS NOT NULL",
        "CREATE INDEX messages_by_sender ON messages(sender)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "INSERT INTO meta (key, value) VALUES ('reserved_id', 0)",
    ),
    (
        # A name an account gave up stays that account's: nobody else may register
        # it and pass for the person others knew by it.
        """CREATE TABLE former_names (
            name_fold TEXT PRIMARY KEY,
            account INTEGER NOT NULL REFERENCES accounts(id)
        )""",
    ),
    (
        # Rooms, memberships and read markers are chat state that must outlive a
        # connection and a restart (and be shared by several server processes).
        """CREATE TABLE rooms (
            name_fold TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            topic TEXT NOT NULL DEFAULT '',
            created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )""",
        """CREATE TABLE memberships (
            room TEXT NOT NULL REFERENCES rooms(name_fold),
            account INTEGER NOT NULL REFERENCES accounts(id),
            PRIMARY KEY (room, account)
        ) WITHOUT ROWID""",
        """CREATE TABLE read_markers (
            account INTEGER NOT NULL REFERENCES accounts(id),
            conversation TEXT NOT NULL,
            last_read INTEGER NOT NULL,
            PRIMARY KEY (account, conversation)
        ) WITHOUT ROWID""",
        # The last sequence number handed out in each conversation: kept here, not
        # derived from the messages, so an erased tail is never numbered again.
        "CREATE TABLE conversations (key TEXT PRIMARY KEY, last_seq INTEGER NOT NULL)"
        " WITHOUT ROWID",
        "ALTER TABLE messages ADD COLUMN seq INTEGER",
        "ALTER TABLE messages ADD COLUMN client_key TEXT",
        "CREATE INDEX messages_by_recipient ON messages(recipient, id) WHERE recipient IS NOT NULL",
        """UPDATE messages SET seq = n.seq FROM (
            SELECT id, row_number() OVER (PARTITION BY coalesce(room, pair) ORDER BY id) AS seq
            FROM messages) AS n WHERE n.id = messages.id""",
        "INSERT INTO conversations (key, last_seq) "
        "SELECT coalesce(room, pair), max(seq) FROM messages GROUP BY 1",
        # Rooms that have history come back under their latest display name.
        "INSERT INTO rooms (name_fold, name) "
        "SELECT room, room_name FROM (SELECT room, room_name, max(id) FROM messages "
        "WHERE room IS NOT NULL GROUP BY room)",
        "INSERT OR IGNORE INTO rooms (name_fold, name) VALUES ('#general', '#general')",
        # Every account was put in the default room at each login until now.
        "INSERT INTO memberships (room, account) SELECT '#general', id FROM accounts",
        # What existed before the upgrade counts as read: nobody is greeted by
        # thousands of "unread" messages they saw long ago.
        "INSERT INTO read_markers (account, conversation, last_read) SELECT id, '#general', "
        "(SELECT coalesce(max(id), 0) FROM messages) FROM accounts",
        """INSERT INTO read_markers (account, conversation, last_read)
            SELECT p.account, p.pair, (SELECT max(id) FROM messages WHERE pair = p.pair) FROM (
                SELECT sender AS account, pair FROM messages WHERE pair IS NOT NULL
                UNION SELECT recipient, pair FROM messages WHERE pair IS NOT NULL) AS p""",
    ),
    (
        # Administration and moderation (issue 11). A deleted account keeps its row,
        # marked, so that its name stays taken and others' messages keep their sender.
        "ALTER TABLE accounts ADD COLUMN role TEXT NOT NULL DEFAULT 'user'",
        "ALTER TABLE accounts ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE bans (
            kind TEXT NOT NULL,
            target TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            by_name TEXT NOT NULL DEFAULT '',
            created TEXT NOT NULL,
            expires TEXT,
            PRIMARY KEY (kind, target)
        ) WITHOUT ROWID""",
        # Only the code's hash: a copy of the database does not hand out invites.
        """CREATE TABLE invites (
            id INTEGER PRIMARY KEY,
            code_hash TEXT NOT NULL UNIQUE,
            by_name TEXT NOT NULL,
            created TEXT NOT NULL,
            expires TEXT NOT NULL,
            used_by INTEGER REFERENCES accounts(id),
            used_at TEXT
        )""",
        "ALTER TABLE rooms ADD COLUMN topic_locked INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE rooms ADD COLUMN invite_only INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE room_rights (
            room TEXT NOT NULL REFERENCES rooms(name_fold),
            account INTEGER NOT NULL REFERENCES accounts(id),
            kind TEXT NOT NULL CHECK (kind IN ('operator', 'invited')),
            PRIMARY KEY (room, account, kind)
        ) WITHOUT ROWID""",
        """CREATE TABLE mutes (
            room TEXT NOT NULL,
            account INTEGER NOT NULL REFERENCES accounts(id),
            by_name TEXT NOT NULL DEFAULT '',
            created TEXT NOT NULL,
            expires TEXT,
            PRIMARY KEY (room, account)
        ) WITHOUT ROWID""",
    ),
    (
        # /me (issue 13): an action is a message shown as "* alice waves".
        "ALTER TABLE messages ADD COLUMN action INTEGER NOT NULL DEFAULT 0",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

# The search index trails the messages table: rows up to meta.indexed_id are
# indexed, later ones are indexed in batches by index_pending(), off the path
# that acknowledges messages (indexing a row costs three times storing it).
# Only indexed rows may be removed from the index: FTS5 cannot delete what it
# never saw.
FTS_DELETE_TRIGGER = """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
    WHEN old.id <= (SELECT value FROM meta WHERE key = 'indexed_id') BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END"""

FTS_SETUP = (
    "CREATE VIRTUAL TABLE messages_fts USING fts5(text, content='messages', content_rowid='id')",
    "INSERT OR REPLACE INTO meta (key, value) VALUES ('indexed_id', 0)",
    FTS_DELETE_TRIGGER,
)

# An index made by an earlier build, kept current by an insert trigger: take the
# trigger away, and record that every row so far is indexed.
FTS_UNTRIGGER = (
    "DROP TRIGGER messages_fts_insert",
    "DROP TRIGGER messages_fts_delete",
    "INSERT OR REPLACE INTO meta (key, value) "
    "SELECT 'indexed_id', coalesce(max(id), 0) FROM messages",
    FTS_DELETE_TRIGGER,
)
