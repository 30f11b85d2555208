-- Ringchat schema (MariaDB 10.11+, InnoDB, utf8mb4, strict sql_mode).
--
-- Applied on every `scripts/services.sh start`, so every statement is
-- idempotent (CREATE ... IF NOT EXISTS). It creates tables and, with a few
-- exceptions at the end ("Migrations"), does not alter existing ones: after
-- changing a table here, `scripts/services.sh reset mysql` gives a fresh
-- database. The database itself is chosen by the caller (the default is
-- `ringchat`; tests may load this file into a ringchat_* scratch database).
--
-- Conventions:
-- * ids are BIGINT UNSIGNED; 0 means "none" where a column is optional, so
--   columns stay NOT NULL and indexes stay compact.
-- * No foreign keys. Every write path is a single transaction issued by the
--   node, which keeps the tables consistent; FK checks would add a locking
--   read of the parent row to every hot insert (messages, members).
-- * Length limits in the protocol count UTF-8 bytes, while VARCHAR(n) counts
--   characters. A string of at most n bytes has at most n characters, so
--   VARCHAR(n) always holds it; the column alone would also accept up to 4n
--   bytes, so the node enforces the byte limit before writing.
-- * Times the node stamps (send_time) are epoch milliseconds in a BIGINT,
--   exactly the value sent on the wire; TIMESTAMP columns are bookkeeping,
--   read back in UTC (the server runs with time_zone +00:00).

-- The hot row, read on every lookup of a user by id or name (friend lists,
-- group members, pushes). Kept narrow: the password hash and the phone number
-- live in user_auth and are read only at login.
-- username is ascii_bin: the protocol allows only [A-Za-z0-9_.-], and the node
-- compares names byte for byte (caches, Redis keys), so the database must
-- agree with it exactly; "Alice" and "alice" are two users. ascii also keeps
-- the unique index at 32 bytes a key instead of 128 for utf8mb4, and a
-- non-ASCII name that slipped past validation fails loudly in strict mode.
CREATE TABLE IF NOT EXISTS users (
	id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
	username    VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	avatar_url  VARCHAR(255) NOT NULL DEFAULT '',
	state       TINYINT UNSIGNED NOT NULL DEFAULT 0,   -- 0 active, 1 disabled
	created_at  TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	PRIMARY KEY (id),
	UNIQUE KEY uk_users_username (username)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Cold credentials, read only at LOGIN, one row per user (same id). Written in
-- the same transaction as the users row at SIGNUP.
-- password_hash is a crypt(3) string ("$y$..."), ASCII by construction.
CREATE TABLE IF NOT EXISTS user_auth (
	user_id       BIGINT UNSIGNED NOT NULL,
	password_hash VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	phone         VARCHAR(32) NOT NULL DEFAULT '',
	PRIMARY KEY (user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Accepted friendships only, one row per direction: (a, b) and (b, a). Each
-- side owns its own remark and group, and "the friends of u" is one range
-- scan of the primary key, clustered together on disk (FRIEND_LIST, the
-- friendship check before MSG_SEND, presence fan-out). FRIEND_DELETE removes
-- both rows in one transaction. Pending requests live in friend_requests.
CREATE TABLE IF NOT EXISTS friends (
	user_id      BIGINT UNSIGNED NOT NULL,
	friend_id    BIGINT UNSIGNED NOT NULL,
	state        TINYINT UNSIGNED NOT NULL DEFAULT 0,  -- 0 friends (others reserved)
	remark       VARCHAR(30) NOT NULL DEFAULT '',      -- <= 30 bytes, enforced by the node
	friend_group INT NOT NULL DEFAULT 0,
	created_at   TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	PRIMARY KEY (user_id, friend_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Requests not yet answered. Keyed by the target first: what LOGIN pushes and
-- FRIEND_LIST's "pending" show are the requests TO a user, adjacent in the
-- primary key. The secondary index finds the requests a user has sent (e.g.
-- to clean up when an account goes away). FRIEND_ACCEPT deletes the row and
-- inserts both friends rows in one transaction. remark is the note shown to
-- the target, <= 30 bytes.
CREATE TABLE IF NOT EXISTS friend_requests (
	from_id    BIGINT UNSIGNED NOT NULL,
	to_id      BIGINT UNSIGNED NOT NULL,
	remark     VARCHAR(30) NOT NULL DEFAULT '',
	created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	PRIMARY KEY (to_id, from_id),
	KEY idx_friend_requests_from (from_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Groups. A dissolved group keeps its row (state 1) so its id is never reused
-- and its history stays addressable; sending to or joining it is NOT_FOUND.
-- name is 1..64 bytes, enforced by the node.
CREATE TABLE IF NOT EXISTS chat_groups (
	id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
	name       VARCHAR(64) NOT NULL,
	owner_id   BIGINT UNSIGNED NOT NULL,
	state      TINYINT UNSIGNED NOT NULL DEFAULT 0,    -- 0 live, 1 dissolved
	created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
-- GROUP_CREATE counts the live groups a user owns (groups_created_max).
-- Created on its own, so a database made before it gets it too.
CREATE INDEX IF NOT EXISTS idx_chat_groups_owner ON chat_groups (owner_id, state);

-- Membership. The primary key clusters a group's members (GROUP_MEMBERS,
-- fan-out of GROUP_SEND); the user_id index serves GROUP_LIST.
-- join_seq orders members by when they joined, strictly: when the owner quits,
-- the new owner is the member with the smallest join_seq. joined_at alone
-- could tie; AUTO_INCREMENT never does, and a member who quits and rejoins
-- gets a new, larger value. (AUTO_INCREMENT needs an index that starts with
-- the column, hence uk_group_members_join_seq.)
-- read_msg_id is the member's delivery cursor: group messages are stored once
-- in `messages`, and a member has acknowledged every message of the group
-- with msg_id <= read_msg_id. On join it is set to the group's newest msg_id
-- so a newcomer is not flooded with older traffic; at login the node pushes
-- the group's messages with msg_id > read_msg_id.
CREATE TABLE IF NOT EXISTS group_members (
	group_id    BIGINT UNSIGNED NOT NULL,
	user_id     BIGINT UNSIGNED NOT NULL,
	join_seq    BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
	joined_at   TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
	read_msg_id BIGINT UNSIGNED NOT NULL DEFAULT 0,
	PRIMARY KEY (group_id, user_id),
	UNIQUE KEY uk_group_members_join_seq (join_seq),
	KEY idx_group_members_user (user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Every message, 1:1 and group, stored once.
-- msg_id is assigned by the node (time-ordered, unique across the cluster),
-- so the clustered index grows at its right edge: inserts append, which is
-- what the group-commit writer's batches need to stay cheap.
-- conversation_id is the same for both directions of a 1:1 pair and distinct
-- per group. 1:1 rows have to_id set and group_id 0; group rows the reverse.
-- text holds the bytes of the JSON string exactly as received (UTF-8 checked
-- by the node), so no charset conversion happens on the hot insert path;
-- MEDIUMBLOB because TEXT/BLOB stop at 65535 bytes and text_max is
-- configurable. Short texts stay in the row; long ones go off-page.
-- A message's client_msg_id is not here but in message_client_ids (below),
-- and only when the client sent one.
--
-- Indexes, by the query each one serves:
-- * idx_messages_conv (conversation_id, msg_id): HISTORY, newest first, paged
--   by before_id:  WHERE conversation_id = ? AND msg_id < ?
--                  ORDER BY msg_id DESC LIMIT n
--   and the group messages a member has not acked:
--                  WHERE conversation_id = ? AND msg_id > read_msg_id
--   msg_id rather than send_time: msg_id is unique and follows send order
--   within a conversation, so a page boundary never splits or repeats rows
--   that share a millisecond, and before_id is itself a msg_id.
-- * No unread flag or index here: which 1:1 messages a user has not
--   acknowledged lives in the narrow table `unread` below. An index on
--   (to_id, is_read, msg_id) was paid twice per message (an entry on insert,
--   a delete-mark plus a new entry on ack, then purge) and cost about 45% of
--   the stored-mode throughput (docs/benchmarks.md).
-- * No index on group_id: a group's messages are its conversation's, so
--   idx_messages_conv already serves "the newest msg_id of a group" (the read
--   cursor a new member starts from); every index here is paid on each of
--   the writer's inserts, the hottest statement of the node.
-- * No unique key on (from_id, client_msg_id): every row paid for it, with
--   or without a client_msg_id (an entry and a uniqueness check per insert,
--   about 30% of MariaDB's CPU per row of the stored chat benchmark, see
--   docs/benchmarks.md); message_client_ids does its job, and only for the
--   messages that carry one.
CREATE TABLE IF NOT EXISTS messages (
	msg_id          BIGINT UNSIGNED NOT NULL,
	conversation_id BIGINT UNSIGNED NOT NULL,
	from_id         BIGINT UNSIGNED NOT NULL,
	to_id           BIGINT UNSIGNED NOT NULL DEFAULT 0,
	group_id        BIGINT UNSIGNED NOT NULL DEFAULT 0,
	type            TINYINT UNSIGNED NOT NULL DEFAULT 0,  -- 0 text, 1 file, 2 image
	text            MEDIUMBLOB NOT NULL,
	send_time       BIGINT NOT NULL,                      -- node's epoch ms at acceptance
	PRIMARY KEY (msg_id),
	KEY idx_messages_conv (conversation_id, msg_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The idempotency keys: one narrow row per message sent WITH a
-- client_msg_id, none for the others. The group-commit writer inserts it in
-- the message's transaction, before the message row; a retried MSG_SEND or
-- GROUP_SEND with the same client_msg_id hits the primary key, and its sender
-- gets the first msg_id back (joined with messages for conversation_id and
-- send_time) instead of a second message, which is never written.
-- client_msg_id is VARBINARY: it is compared byte for byte. Under a _ci
-- collation "abc" and "ABC" would collide and one of two distinct messages
-- would be dropped as a retry.
CREATE TABLE IF NOT EXISTS message_client_ids (
	from_id       BIGINT UNSIGNED NOT NULL,
	client_msg_id VARBINARY(64) NOT NULL,
	msg_id        BIGINT UNSIGNED NOT NULL,
	PRIMARY KEY (from_id, client_msg_id)
) ENGINE = InnoDB;

-- ---- Messaging: conversations ----------------------------------------------
-- One row per conversation, so conversation_id is a small AUTO_INCREMENT value
-- (well below 2^53, exact in every JSON client) that is the same for both
-- directions of a 1:1 pair and distinct per group:
--   kind 1, a pair:  a = the smaller user id, b = the larger one
--   kind 2, a group: a = group_id, b = 0
-- The node gets or creates the row on the first message of a conversation
-- (SELECT, then INSERT IGNORE + SELECT, so racing nodes agree on one row) and
-- caches the mapping, which never changes. uk_conversations serves that lookup
-- and, at login, finding the conversations of a user's groups
-- (c.kind = 2 AND c.a = group_members.group_id AND c.b = 0).
CREATE TABLE IF NOT EXISTS conversations (
	id   BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
	kind TINYINT UNSIGNED NOT NULL,                -- 1 pair, 2 group
	a    BIGINT UNSIGNED NOT NULL,
	b    BIGINT UNSIGNED NOT NULL,
	PRIMARY KEY (id),
	UNIQUE KEY uk_conversations (kind, a, b)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The 1:1 messages each user has not acknowledged yet: one narrow row per
-- message, written by the group-commit writer (in the message's own
-- transaction, or up to unread_defer_ms later when it is not acked by
-- then: see node_state below) and deleted by MSG_ACK. Clustered by recipient, so the push
-- at LOGIN (oldest first, paged by msg_id) is one range scan:
--                  SELECT msg_id FROM unread WHERE to_id = ? AND msg_id > ?
--                  ORDER BY msg_id LIMIT n
-- and an ack deletes rows by primary key. Group messages need no rows here:
-- each member has a read cursor (group_members.read_msg_id).
CREATE TABLE IF NOT EXISTS unread (
	to_id  BIGINT UNSIGNED NOT NULL,
	msg_id BIGINT UNSIGNED NOT NULL,
	PRIMARY KEY (to_id, msg_id)
) ENGINE = InnoDB;

-- One row per node: the group-commit writer's unread floor. A 1:1 message's
-- unread row may be held in the node's memory for unread_defer_ms (an ack
-- within that time means it is never written); every such message of the
-- node lies above the floor, which is stored with each batch. After an
-- unclean stop the node gives the messages above its floor their unread
-- rows back before it accepts anything (src/store/commit.c).
CREATE TABLE IF NOT EXISTS node_state (
	node_id      TINYINT UNSIGNED NOT NULL,
	unread_floor BIGINT UNSIGNED NOT NULL,
	PRIMARY KEY (node_id)
) ENGINE = InnoDB;

-- ---- Migrations -------------------------------------------------------------
-- Each one brings a database made by an older version of this file up to
-- date, and does nothing on one that is (so the file stays idempotent).
-- Applied by whoever applies the file, before nodes of this version start.

-- messages.client_msg_id and its unique key uk_messages_client became table
-- message_client_ids. The keys are copied first, then the index and the
-- column go; the copy runs only while the column exists, so a run stopped
-- half-way is finished by the next one (INSERT IGNORE: nothing copied twice).
-- Dropping the index and then the column rebuilds no table (MariaDB 10.4+:
-- in place, then instant).
SET @rc_old_cmid = (SELECT COUNT(*) FROM information_schema.COLUMNS
	WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'messages'
	AND COLUMN_NAME = 'client_msg_id');
EXECUTE IMMEDIATE IF(@rc_old_cmid > 0,
	'INSERT IGNORE INTO message_client_ids (from_id, client_msg_id, msg_id) '
	'SELECT from_id, client_msg_id, msg_id FROM messages WHERE client_msg_id IS NOT NULL',
	'DO 0');
EXECUTE IMMEDIATE IF(@rc_old_cmid > 0,
	'ALTER TABLE messages DROP INDEX IF EXISTS uk_messages_client', 'DO 0');
EXECUTE IMMEDIATE IF(@rc_old_cmid > 0,
	'ALTER TABLE messages DROP COLUMN client_msg_id', 'DO 0');
