"""Numbered, append-only migrations. Never edit a released one: add the next.

``{real}``, ``{bigint}``, ``{text}`` and ``{clustered}`` are filled in from the
engine's dialect. JSON is stored as text in both dialects so that the same SQL
serves both. Partial indexes keep only what is looked up: active runs (a finished
run leaves the index) and runs that carry an idempotency key. The event log is
clustered by (session_id, seq) on SQLite (WITHOUT ROWID): one B-tree per append
instead of two.

Migration 2 adds run leases (``lease_owner``, ``lease_expires_at``: which node drives
a run, until when), a run's place in its session's queue (``queued_seq``, the seq of
its ``run.queued`` event: FIFO by commit order, whatever the nodes' clocks say), a
cancel asked for on another node than the run's (``cancel_requested``: the reason), a
session's last checkpoint (``checkpoint_seq``, ``checkpoint_at``: when the next
automatic one is due) and the checkpoints table (a checkpoint is a named pointer into
the log: the state at ``seq``). It replaces ``runs_active`` with
``runs_session_active``: two partial indexes on the same condition made every status
change several times slower on SQLite (docs/design-notes.md).

Migration 3 adds the usage ledger and run priorities. ``usage_daily`` holds one row
per UTC day, agent and model (calls, tokens, cost), upserted in the same transaction
as the step that used them; the agent's name and tenant are copied in and there is
no foreign key, so billing history outlives a deleted agent. ``(tenant, day)`` and
``(agent_id, day)`` serve budget checks over a day range. ``runs.priority`` records
the priority a message was sent with (``background`` for runs from before).

Migration 5 adds ``sandbox_uids``: the uid (and gid) each agent's commands run as
under a root daemon. No foreign key: a row outlives its agent, so that a uid is not
given to a second one before it is reclaimed (migration 17, ``agentd.store._uids``).

Migration 7 adds core memory blocks (``agentd.store.blocks``): ``memory_blocks``
(the value, its limit and read-only flag, a version bumped by every write),
``agent_blocks`` (which agents see a block, under which label: unique per agent, and
in which order) and ``block_versions`` (every version's value and who wrote it, so
any write can be seen and undone). A block is shared by linking it to more agents.

Migration 8 adds long-term memory entries (``agentd.store.entries``), the first
migration whose SQL differs by dialect (a ``{"sqlite": ..., "postgresql": ...}``
dict). ``memory_entries.n`` is an integer key that is never reused (AUTOINCREMENT,
an identity column), so a vector index can name entries by it. ``content_hash`` is
unique per namespace: an exact duplicate is refused by the database, not only by a
check. ``embedded_with`` is NULL while an entry waits for its vector (a partial
index finds those). ``memory_tags`` serves tag filters. ``memory_vectors`` holds one
vector per entry with a ``stamp`` from ``memory_clock``, and ``memory_deleted`` a
tombstone for every vector removed: an index catches up by reading both past the
last stamp it saw. Full text: an FTS5 external-content table kept in step by
triggers (SQLite); a generated ``tsvector`` column with a GIN index (PostgreSQL),
without GIN's pending list (``fastupdate = off``): with it, entries just written sat
in an unsorted list the planner rightly refused to scan, and searched sequentially.
pgvector is not required here: ``_entries.ensure_pgvector`` adds its table at start
when the extension exists.

Migration 9 puts the namespace into SQLite's FTS index (``fts_ns``, a generated column
of ``memory_entries`` holding one token per namespace) and rebuilds the index: FTS5
keeps a search to its namespaces itself (``agentd.store._fulltext``).

Migration 10 adds ``subtasks`` (``agentd.store.subtasks``): one row per child run a
run started, a subtask or a call to another agent (``type``). It is inserted in the
transaction that queues the child's run, so neither exists without the other;
``effect_id`` (the starting tool call's) is unique, so a call re-run after a crash
finds its child instead of starting a second one, and ``(parent_run, n)`` numbers a
run's children (``n`` names the child's session). ``reported`` is set in the
transaction that logs ``subtask.finished`` in the parent's session (exactly once); a
partial index finds the rows not yet reported. No foreign key on the child: its
session may be deleted, and the parent then reads it as gone.

Migration 11 adds schedules (``agentd.store.schedules``): ``schedules`` (a definition,
its next fire time nominal and jittered, counters; deleted with its agent) with a
partial index on ``next_due_at`` of the enabled ones (the one query that finds due
schedules), and ``schedule_fires``: the claim on each fire time, its primary key
``(schedule_id, fire_at)`` (a fire time is claimed once, committed with its run).
"""

from __future__ import annotations

from collections.abc import Callable

from agentd.store.engine import Tx

__all__ = ["MIGRATIONS", "STEPS"]

#: (version, name, SQL): the SQL is one script, or one per dialect.
MIGRATIONS: list[tuple[int, str, str | dict[str, str]]] = [
    (
        1,
        "agents, sessions, events, runs",
        """
CREATE TABLE agents (
    id           {text} PRIMARY KEY,
    name         {text} NOT NULL UNIQUE,
    model        {text} NOT NULL,
    instructions {text} NOT NULL DEFAULT '',
    tools        {text} NOT NULL DEFAULT '[]',
    settings     {text} NOT NULL DEFAULT '{{}}',
    state        {text} NOT NULL,
    created_at   {real} NOT NULL,
    updated_at   {real} NOT NULL
);
CREATE TABLE sessions (
    id          {text} PRIMARY KEY,
    agent_id    {text} NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    key         {text} NOT NULL,
    last_seq    {bigint} NOT NULL DEFAULT 0,
    created_at  {real} NOT NULL,
    updated_at  {real} NOT NULL,
    UNIQUE (agent_id, key)
);
CREATE TABLE runs (
    id              {text} PRIMARY KEY,
    session_id      {text} NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    agent_id        {text} NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    status          {text} NOT NULL,
    input           {text} NOT NULL,
    output          {text},
    error           {text},
    steps           {bigint} NOT NULL DEFAULT 0,
    usage           {text} NOT NULL DEFAULT '{{}}',
    idempotency_key {text},
    created_at      {real} NOT NULL,
    started_at      {real},
    finished_at     {real}
);
CREATE INDEX runs_active ON runs (status, created_at)
    WHERE status IN ('queued', 'running', 'waiting_approval');
CREATE INDEX runs_session ON runs (session_id);
CREATE UNIQUE INDEX runs_idempotency ON runs (session_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE events (
    session_id {text} NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq        {bigint} NOT NULL,
    run_id     {text},
    kind       {text} NOT NULL,
    data       {text} NOT NULL,
    at         {real} NOT NULL,
    PRIMARY KEY (session_id, seq)
){clustered}
""",
    ),
]

MIGRATIONS.append((
    2,
    "run leases, checkpoints",
    """
ALTER TABLE runs ADD COLUMN lease_owner {text};
ALTER TABLE runs ADD COLUMN lease_expires_at {real};
ALTER TABLE runs ADD COLUMN queued_seq {bigint};
ALTER TABLE runs ADD COLUMN cancel_requested {text};
UPDATE runs SET queued_seq = (SELECT MIN(e.seq) FROM events e WHERE e.session_id =
    runs.session_id AND e.run_id = runs.id AND e.kind = 'run.queued');
ALTER TABLE sessions ADD COLUMN checkpoint_seq {bigint} NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN checkpoint_at {real} NOT NULL DEFAULT 0;
DROP INDEX runs_active;
CREATE INDEX runs_session_active ON runs (session_id, queued_seq)
    WHERE status IN ('queued', 'running', 'waiting_approval');
CREATE TABLE checkpoints (
    id          {text} PRIMARY KEY,
    session_id  {text} NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq         {bigint} NOT NULL,
    name        {text},
    kind        {text} NOT NULL,
    created_at  {real} NOT NULL
);
CREATE INDEX checkpoints_session ON checkpoints (session_id, seq);
CREATE UNIQUE INDEX checkpoints_name ON checkpoints (session_id, name)
    WHERE name IS NOT NULL;
""",
))

MIGRATIONS.append((
    3,
    "usage ledger, run priority",
    """
CREATE TABLE usage_daily (
    day           {text} NOT NULL,
    agent_id      {text} NOT NULL,
    agent         {text} NOT NULL,
    tenant        {text} NOT NULL DEFAULT '',
    model         {text} NOT NULL,
    calls         {bigint} NOT NULL DEFAULT 0,
    input_tokens  {bigint} NOT NULL DEFAULT 0,
    output_tokens {bigint} NOT NULL DEFAULT 0,
    cached_tokens {bigint} NOT NULL DEFAULT 0,
    cost_usd      {real} NOT NULL DEFAULT 0,
    PRIMARY KEY (day, agent_id, model)
){clustered};
CREATE INDEX usage_daily_tenant ON usage_daily (tenant, day);
CREATE INDEX usage_daily_agent ON usage_daily (agent_id, day);
ALTER TABLE runs ADD COLUMN priority {text} NOT NULL DEFAULT 'background';
""",
))

MIGRATIONS.append((
    4,
    "session policy",
    """
ALTER TABLE sessions ADD COLUMN policy {text};
""",
))

MIGRATIONS.append((
    5,
    "sandbox uids",
    """
CREATE TABLE sandbox_uids (
    uid        {bigint} PRIMARY KEY,
    agent_id   {text} NOT NULL UNIQUE,
    created_at {real} NOT NULL
);
""",
))

MIGRATIONS.append((
    6,
    "runs listed newest first",
    """
CREATE INDEX runs_created ON runs (created_at, id);
CREATE INDEX runs_agent_created ON runs (agent_id, created_at, id);
""",
))

MIGRATIONS.append((
    7,
    "core memory blocks",
    """
CREATE TABLE memory_blocks (
    id          {text} PRIMARY KEY,
    label       {text} NOT NULL,
    description {text} NOT NULL DEFAULT '',
    value       {text} NOT NULL DEFAULT '',
    char_limit  {bigint} NOT NULL,
    read_only   {bigint} NOT NULL DEFAULT 0,
    version     {bigint} NOT NULL,
    created_at  {real} NOT NULL,
    updated_at  {real} NOT NULL
);
CREATE TABLE agent_blocks (
    agent_id {text} NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    block_id {text} NOT NULL REFERENCES memory_blocks(id) ON DELETE CASCADE,
    label    {text} NOT NULL,
    position {bigint} NOT NULL,
    PRIMARY KEY (agent_id, block_id),
    UNIQUE (agent_id, label)
);
CREATE INDEX agent_blocks_block ON agent_blocks (block_id);
CREATE TABLE block_versions (
    block_id    {text} NOT NULL REFERENCES memory_blocks(id) ON DELETE CASCADE,
    version     {bigint} NOT NULL,
    value       {text} NOT NULL,
    description {text} NOT NULL,
    char_limit  {bigint} NOT NULL,
    read_only   {bigint} NOT NULL,
    changed_by  {text} NOT NULL,
    run_id      {text},
    at          {real} NOT NULL,
    PRIMARY KEY (block_id, version)
);
""",
))


_MEMORY_ENTRIES = """
    id             {text} NOT NULL UNIQUE,
    namespace      {text} NOT NULL,
    content        {text} NOT NULL,
    content_hash   {text} NOT NULL,
    tags           {text} NOT NULL DEFAULT '[]',
    metadata       {text} NOT NULL DEFAULT '{{}}',
    source_session {text},
    source_run     {text},
    source_seq     {bigint},
    agent_id       {text},
    tainted        {text},
    created_at     {real} NOT NULL,
    updated_at     {real} NOT NULL,
    version        {bigint} NOT NULL,
    embedded_with  {text},
    UNIQUE (namespace, content_hash)
);
CREATE INDEX memory_entries_created ON memory_entries (namespace, created_at);
CREATE INDEX memory_entries_pending ON memory_entries (namespace, n) WHERE embedded_with IS NULL;
CREATE INDEX memory_entries_pending_all ON memory_entries (n) WHERE embedded_with IS NULL;
CREATE TABLE memory_tags (
    n         {bigint} NOT NULL REFERENCES memory_entries(n) ON DELETE CASCADE,
    namespace {text} NOT NULL,
    tag       {text} NOT NULL,
    PRIMARY KEY (n, tag)
){clustered};
CREATE INDEX memory_tags_tag ON memory_tags (namespace, tag);
CREATE TABLE memory_deleted (
    namespace {text} NOT NULL,
    n         {bigint} NOT NULL,
    stamp     {bigint} NOT NULL,
    PRIMARY KEY (namespace, stamp)
){clustered};
CREATE TABLE memory_clock (
    id    {bigint} PRIMARY KEY CHECK (id = 1),
    stamp {bigint} NOT NULL
);
INSERT INTO memory_clock (id, stamp) VALUES (1, 0);
"""


def _memory_vectors(blob: str) -> str:
    return f"""
CREATE TABLE memory_vectors (
    n         {{bigint}} PRIMARY KEY REFERENCES memory_entries(n) ON DELETE CASCADE,
    namespace {{text}} NOT NULL,
    embedder  {{text}} NOT NULL,
    vec       {blob} NOT NULL,
    stamp     {{bigint}} NOT NULL
);
CREATE INDEX memory_vectors_stamp ON memory_vectors (namespace, embedder, stamp);
"""


MIGRATIONS.append((
    8,
    "long-term memory entries",
    {
        "sqlite": "CREATE TABLE memory_entries (\n    n INTEGER PRIMARY KEY AUTOINCREMENT,"
                  + _MEMORY_ENTRIES + _memory_vectors("BLOB") + """
CREATE VIRTUAL TABLE memory_fts USING fts5(
    content, content='memory_entries', content_rowid='n', tokenize='porter unicode61');
CREATE TRIGGER memory_entries_fts_insert AFTER INSERT ON memory_entries BEGIN
    INSERT INTO memory_fts (rowid, content) VALUES (new.n, new.content);
END;
CREATE TRIGGER memory_entries_fts_delete AFTER DELETE ON memory_entries BEGIN
    INSERT INTO memory_fts (memory_fts, rowid, content) VALUES ('delete', old.n, old.content);
END;
CREATE TRIGGER memory_entries_fts_update AFTER UPDATE OF content ON memory_entries BEGIN
    INSERT INTO memory_fts (memory_fts, rowid, content) VALUES ('delete', old.n, old.content);
    INSERT INTO memory_fts (rowid, content) VALUES (new.n, new.content);
END;
""",
        "postgresql": "CREATE TABLE memory_entries (\n"
                      "    n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                      + _MEMORY_ENTRIES + _memory_vectors("BYTEA") + """
ALTER TABLE memory_entries ADD COLUMN content_tsv tsvector
    GENERATED ALWAYS AS (to_tsvector('english', content)) STORED;
CREATE INDEX memory_entries_fts ON memory_entries USING gin (content_tsv)
    WITH (fastupdate = off);
""",
    },
))


MIGRATIONS.append((
    9,
    "the namespace in the memory full-text index (agentd.store._fulltext)",
    {
        # FTS5 keeps to the searched namespaces itself (no join per match); the
        # index is derived from memory_entries and rebuilt from it here.
        "sqlite": """
DROP TRIGGER memory_entries_fts_insert;
DROP TRIGGER memory_entries_fts_delete;
DROP TRIGGER memory_entries_fts_update;
DROP TABLE memory_fts;
ALTER TABLE memory_entries ADD COLUMN fts_ns TEXT
    GENERATED ALWAYS AS ('n' || lower(hex(namespace))) VIRTUAL;
CREATE VIRTUAL TABLE memory_fts USING fts5(
    content, fts_ns, content='memory_entries', content_rowid='n',
    tokenize='porter unicode61');
INSERT INTO memory_fts (memory_fts) VALUES ('rebuild');
CREATE TRIGGER memory_entries_fts_insert AFTER INSERT ON memory_entries BEGIN
    INSERT INTO memory_fts (rowid, content, fts_ns) VALUES (new.n, new.content, new.fts_ns);
END;
CREATE TRIGGER memory_entries_fts_delete AFTER DELETE ON memory_entries BEGIN
    INSERT INTO memory_fts (memory_fts, rowid, content, fts_ns)
        VALUES ('delete', old.n, old.content, old.fts_ns);
END;
CREATE TRIGGER memory_entries_fts_update AFTER UPDATE OF content, namespace
        ON memory_entries BEGIN
    INSERT INTO memory_fts (memory_fts, rowid, content, fts_ns)
        VALUES ('delete', old.n, old.content, old.fts_ns);
    INSERT INTO memory_fts (rowid, content, fts_ns) VALUES (new.n, new.content, new.fts_ns);
END;
""",
        # PostgreSQL's planner combines the GIN index with the namespace's own.
        "postgresql": "SELECT 1;",
    },
))


MIGRATIONS.append((
    10,
    "subtasks and agent calls",
    """
CREATE TABLE subtasks (
    id              {text} PRIMARY KEY,
    type            {text} NOT NULL,
    parent_run      {text} NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    parent_session  {text} NOT NULL,
    parent_agent_id {text} NOT NULL,
    n               {bigint} NOT NULL,
    effect_id       {text} NOT NULL UNIQUE,
    child_run       {text} NOT NULL UNIQUE,
    child_session   {text} NOT NULL,
    child_agent_id  {text} NOT NULL,
    child_agent     {text} NOT NULL,
    child_key       {text} NOT NULL,
    title           {text} NOT NULL DEFAULT '',
    depth           {bigint} NOT NULL,
    created_at      {real} NOT NULL,
    reported        {bigint} NOT NULL DEFAULT 0,
    UNIQUE (parent_run, n)
);
CREATE INDEX subtasks_unreported ON subtasks (created_at) WHERE reported = 0;
""",
))


MIGRATIONS.append((
    11,
    "schedules",
    """
CREATE TABLE schedules (
    id            {text} PRIMARY KEY,
    agent_id      {text} NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    cron          {text},
    every_s       {real},
    at            {real},
    timezone      {text} NOT NULL,
    session       {text},
    content       {text} NOT NULL,
    jitter_s      {real} NOT NULL DEFAULT 0,
    overlap       {text} NOT NULL,
    missed        {text} NOT NULL,
    catchup_s     {real} NOT NULL,
    ends_at       {real},
    enabled       {bigint} NOT NULL DEFAULT 1,
    paused_reason {text},
    next_fire_at  {real},
    next_due_at   {real},
    last_fire_at  {real},
    last_run_id   {text},
    fires         {bigint} NOT NULL DEFAULT 0,
    missed_count  {bigint} NOT NULL DEFAULT 0,
    skipped_count {bigint} NOT NULL DEFAULT 0,
    failures      {bigint} NOT NULL DEFAULT 0,
    counted_after {real} NOT NULL DEFAULT 0,
    created_by    {text} NOT NULL,
    created_run   {text},
    created_at    {real} NOT NULL,
    updated_at    {real} NOT NULL,
    version       {bigint} NOT NULL DEFAULT 1
);
CREATE INDEX schedules_due ON schedules (next_due_at) WHERE enabled = 1;
CREATE INDEX schedules_agent ON schedules (agent_id, id);
CREATE TABLE schedule_fires (
    schedule_id {text} NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
    fire_at     {real} NOT NULL,
    run_id      {text},
    status      {text} NOT NULL,
    reason      {text},
    at          {real} NOT NULL,
    PRIMARY KEY (schedule_id, fire_at)
){clustered};
""",
))


# Migration 12: heartbeat claims and proactive posts (agentd.store.heartbeats). One
# heartbeats row per agent: the last beat slot claimed (only ever moved forward, in the
# transaction of the beat's run) and the last skip. proactive_posts: one row per post,
# keyed by the posting run and the tool call's effect id (a re-run posts nothing twice;
# the per-run cap counts them); it goes with the posting run's session.
MIGRATIONS.append((
    12,
    "heartbeats and proactive posts",
    """
CREATE TABLE heartbeats (
    agent_id    {text} PRIMARY KEY REFERENCES agents(id) ON DELETE CASCADE,
    beat_at     {real} NOT NULL DEFAULT 0,
    run_id      {text},
    skip_at     {real},
    skip_reason {text}
);
CREATE TABLE proactive_posts (
    run_id     {text} NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    effect_id  {text} NOT NULL,
    session_id {text} NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq        {bigint} NOT NULL,
    at         {real} NOT NULL,
    PRIMARY KEY (run_id, effect_id)
);
""",
))


# Migration 13: the Telegram channel (agentd.store.telegram). telegram_inbox holds
# every update a webhook acknowledged, keyed by (agent, update_id): a replayed update
# is a no-op insert; ``status`` is pending until the channel's worker handed it to the
# agent (``run_id``) or set it aside (skipped, refused, failed with ``error``).
# telegram_chats has a row per chat that sent a message (made with its first update):
# the session it is bound to and the delivery cursor (every event up to
# ``delivered_seq`` was handled; ``partial_parts`` parts of the split message at
# ``partial_seq`` were sent), and the lease of the node serving the chat
# (``lease_owner`` until ``lease_until``): one node at a time hands its updates over
# and sends its replies.
MIGRATIONS.append((
    13,
    "telegram channel",
    """
CREATE TABLE telegram_inbox (
    agent_id    {text} NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    update_id   {bigint} NOT NULL,
    chat_id     {bigint},
    body        {text} NOT NULL,
    status      {text} NOT NULL,
    attempts    {bigint} NOT NULL DEFAULT 0,
    error       {text},
    run_id      {text},
    received_at {real} NOT NULL,
    done_at     {real},
    PRIMARY KEY (agent_id, update_id)
);
CREATE INDEX telegram_inbox_pending ON telegram_inbox (agent_id, chat_id, update_id)
    WHERE status = 'pending';
CREATE TABLE telegram_chats (
    agent_id      {text} NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    chat_id       {bigint} NOT NULL,
    session_key   {text} NOT NULL,
    session_id    {text},
    delivered_seq {bigint} NOT NULL DEFAULT 0,
    partial_seq   {bigint} NOT NULL DEFAULT 0,
    partial_parts {bigint} NOT NULL DEFAULT 0,
    sent          {bigint} NOT NULL DEFAULT 0,
    last_error    {text},
    lease_owner   {text},
    lease_until   {real} NOT NULL DEFAULT 0,
    created_at    {real} NOT NULL,
    updated_at    {real} NOT NULL,
    PRIMARY KEY (agent_id, chat_id)
);
""",
))


# Migration 14: outbound webhooks (agentd.store.webhooks). ``webhooks``: a subscription
# (an agent's, deleted with it) with its signing secret. ``webhook_cursors``: per
# subscription and session, the last seq turned into deliveries (moved forward only, in
# the transaction that inserts them). ``webhook_deliveries``: one row per event sent to
# a subscription, its id derived from (subscription, session, seq) so a second scan
# can never make a second one; its body is kept (the session may be deleted before it
# is sent). A partial index finds what is due; a lease (owner, until) keeps two nodes
# from sending one delivery at once.
MIGRATIONS.append((
    14,
    "webhooks",
    """
CREATE TABLE webhooks (
    id          {text} PRIMARY KEY,
    agent_id    {text} NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    url         {text} NOT NULL,
    kinds       {text} NOT NULL,
    description {text} NOT NULL DEFAULT '',
    enabled     {bigint} NOT NULL DEFAULT 1,
    secret      {text} NOT NULL,
    created_at  {real} NOT NULL,
    updated_at  {real} NOT NULL
);
CREATE INDEX webhooks_agent ON webhooks (agent_id, id);
CREATE TABLE webhook_cursors (
    webhook_id {text} NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    session_id {text} NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq        {bigint} NOT NULL,
    PRIMARY KEY (webhook_id, session_id)
){clustered};
CREATE TABLE webhook_deliveries (
    id              {text} PRIMARY KEY,
    webhook_id      {text} NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    session_id      {text},
    seq             {bigint},
    kind            {text} NOT NULL,
    body            {text} NOT NULL,
    status          {text} NOT NULL,
    attempts        {bigint} NOT NULL DEFAULT 0,
    attempt_limit   {bigint} NOT NULL,
    next_attempt_at {real} NOT NULL,
    lease_owner     {text},
    lease_until     {real},
    last_status     {bigint},
    last_error      {text},
    last_attempt_at {real},
    created_at      {real} NOT NULL,
    delivered_at    {real}
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, created_at, id);
""",
))

# Migration 15: an agent's sessions by recent activity (agentd.store.sessions_query).
# The index walks one agent's sessions in the listing's order (updated_at, then id), so
# a page reads its own rows and no more, however many sessions the agent has.
MIGRATIONS.append((
    15,
    "sessions by recent activity",
    """
CREATE INDEX sessions_recent ON sessions (agent_id, updated_at, id);
""",
))

# Migration 16: who may do what (agentd.identity; docs/security.md, "Identity").
# ``agents.tenant`` copies an agent's ``settings.tenant`` (NULL when the settings hold no
# string there), kept by every write of the settings, so that tenant quotas count and
# lists filter in SQL. ``tokens``: named tokens (a hash of each, never the text),
# ``tenants``: tenants made through the API with their quotas, ``audit_log``: the
# hash-chained record of decisions and changes (agentd.store.audit);
# ``identity_version`` is bumped by every change to tokens or tenants, so that other
# nodes see when to read them again.
_TENANT_OF = {
    "sqlite": "CASE WHEN json_type(settings, '$.tenant') IS NULL THEN 'default' "
              "WHEN json_type(settings, '$.tenant') = 'text' "
              "THEN json_extract(settings, '$.tenant') END",
    "postgresql": "CASE WHEN (settings::jsonb -> 'tenant') IS NULL THEN 'default' "
                  "WHEN jsonb_typeof(settings::jsonb -> 'tenant') = 'string' "
                  "THEN settings::jsonb ->> 'tenant' END",
}
_IDENTITY = """
ALTER TABLE agents ADD COLUMN tenant {text};
UPDATE agents SET tenant = %s;
CREATE INDEX agents_tenant ON agents (tenant, name);
CREATE INDEX memory_entries_agent ON memory_entries (agent_id);
CREATE TABLE tokens (
    name       {text} PRIMARY KEY,
    id         {text} NOT NULL UNIQUE,
    hash       {text} NOT NULL,
    role       {text} NOT NULL,
    tenant     {text},
    agents     {text},
    expires_at {real},
    created_at {real} NOT NULL,
    created_by {text},
    rotated_at {real}
);
CREATE INDEX tokens_tenant ON tokens (tenant);
CREATE TABLE tenants (
    name        {text} PRIMARY KEY,
    quotas      {text} NOT NULL DEFAULT '{{}}',
    description {text} NOT NULL DEFAULT '',
    created_at  {real} NOT NULL,
    updated_at  {real} NOT NULL,
    created_by  {text}
);
CREATE TABLE audit_log (
    seq      {bigint} PRIMARY KEY,
    at       {real} NOT NULL,
    actor    {text},
    role     {text},
    action   {text} NOT NULL,
    resource {text} NOT NULL,
    outcome  {text} NOT NULL,
    reason   {text} NOT NULL,
    details  {text} NOT NULL,
    prev     {text} NOT NULL,
    hash     {text} NOT NULL
);
CREATE TABLE identity_version (
    id      {bigint} PRIMARY KEY,
    version {bigint} NOT NULL
);
INSERT INTO identity_version (id, version) VALUES (1, 0);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
CREATE INDEX audit_log_action ON audit_log (action, seq);
"""
MIGRATIONS.append((
    16,
    "identity: agents' tenant, tokens, tenants, audit log",
    {dialect: _IDENTITY.replace("%s", expression)
     for dialect, expression in _TENANT_OF.items()},
))

# Migration 17: sandbox uids are reclaimed (agentd.store._uids). A row now outlives its
# agent only until every node that used the uid has swept it; ``tenant`` counts uids
# against a tenant's cap. Uids given before were used where the process backend could
# write to the host: a node row with ``sealed = 0`` keeps each of them from ever being
# given again. (16 is another change's.)
_UIDS_17 = """
CREATE TABLE sandbox_uids_17 (
    uid         {bigint} PRIMARY KEY,
    agent_id    {text} NOT NULL,
    tenant      {text} NOT NULL,
    created_at  {real} NOT NULL,
    released_at {real}
);
INSERT INTO sandbox_uids_17 (uid, agent_id, tenant, created_at, released_at)
    SELECT u.uid, u.agent_id, COALESCE(__TENANT__, 'default'), u.created_at,
           CASE WHEN a.id IS NULL THEN u.created_at END
    FROM sandbox_uids u LEFT JOIN agents a ON a.id = u.agent_id;
DROP TABLE sandbox_uids;
ALTER TABLE sandbox_uids_17 RENAME TO sandbox_uids;
CREATE UNIQUE INDEX sandbox_uids_held ON sandbox_uids (agent_id) WHERE released_at IS NULL;
CREATE INDEX sandbox_uids_tenant ON sandbox_uids (tenant) WHERE released_at IS NULL;
CREATE TABLE sandbox_uid_nodes (
    uid     {bigint} NOT NULL,
    node_id {text} NOT NULL,
    sealed  {bigint} NOT NULL,
    PRIMARY KEY (uid, node_id)
);
INSERT INTO sandbox_uid_nodes (uid, node_id, sealed) SELECT uid, '', 0 FROM sandbox_uids;
"""
MIGRATIONS.append((
    17,
    "sandbox uids reclaimed",
    {
        "sqlite": _UIDS_17.replace(
            "__TENANT__", "CASE WHEN json_type(a.settings, '$.tenant') = 'text' "
                          "THEN json_extract(a.settings, '$.tenant') END"),
        "postgresql": _UIDS_17.replace(
            "__TENANT__", "CASE WHEN json_typeof(a.settings::json -> 'tenant') = 'string' "
                          "THEN a.settings::json ->> 'tenant' END"),
    },
))

# Migration 18: the usage ledger counts the prompt tokens written to a provider's
# prompt cache (``cache_write_tokens``, summed like ``cached_tokens``: Anthropic charges
# 1.25 times input for them). Rows from before have 0: their writes were counted as
# input only.
MIGRATIONS.append((
    18,
    "usage ledger: cache writes",
    """
ALTER TABLE usage_daily ADD COLUMN cache_write_tokens {bigint} NOT NULL DEFAULT 0;
""",
))

# Migration 19: traces (agentd.telemetry): which finished runs have had their spans
# exported, after a watermark below which every run is finished and exported. Written
# only while traces are on.
MIGRATIONS.append((
    19,
    "traces: exported runs",
    """
CREATE TABLE trace_cursor (
    name       {text} PRIMARY KEY,
    created_at {real} NOT NULL
);
CREATE TABLE trace_exports (
    run_id     {text} PRIMARY KEY,
    created_at {real} NOT NULL
);
CREATE INDEX trace_exports_created ON trace_exports (created_at);
""",
))

# Migration 20: workspaces that follow their runs (agentd.store._snapshot_store). Snapshot
# objects kept in the database (a file's content or a manifest, by SHA-256, under the
# agent's tenant, in chunks of at most 1 MiB; ``complete`` once every chunk is written),
# the marks of the snapshots each agent took (why their content is untrusted, "" when it
# is not), and each agent's workspace head: its last committed state, the node that
# committed it and when it was taken, moved in the transaction of the event that names
# it. Nothing is copied in: snapshots from before stay where they were taken (docs/
# operations.md, "Workspaces in a cluster").
_SNAPSHOTS_20 = """
CREATE TABLE snapshot_objects (
    scope      {text} NOT NULL,
    digest     {text} NOT NULL,
    size       {bigint} NOT NULL,
    chunks     {bigint} NOT NULL,
    manifest   {bigint} NOT NULL,
    complete   {bigint} NOT NULL,
    created_at {real} NOT NULL,
    used_at    {real} NOT NULL,
    PRIMARY KEY (scope, digest)
);
CREATE TABLE snapshot_chunks (
    scope  {text} NOT NULL,
    digest {text} NOT NULL,
    n      {bigint} NOT NULL,
    data   __BLOB__ NOT NULL,
    PRIMARY KEY (scope, digest, n)
);
CREATE TABLE snapshot_marks (
    agent_id   {text} NOT NULL,
    ref        {text} NOT NULL,
    why        {text} NOT NULL,
    created_at {real} NOT NULL,
    PRIMARY KEY (agent_id, ref)
);
CREATE TABLE workspace_heads (
    agent_id   {text} PRIMARY KEY,
    ref        {text} NOT NULL,
    node       {text},
    taken_at   {real},
    session_id {text} NOT NULL,
    seq        {bigint} NOT NULL,
    at         {real} NOT NULL
);
"""
MIGRATIONS.append((
    20,
    "workspace snapshots in the store, marks and heads",
    {"sqlite": _SNAPSHOTS_20.replace("__BLOB__", "BLOB"),
     "postgresql": _SNAPSHOTS_20.replace("__BLOB__", "BYTEA")},
))

# Migration 21: the cluster's shared rate limits (agentd.store.limits): a row per
# scheduler lane (its buckets' GCRA times and pause), a row per concurrency slot (the
# claim holding it, until when) and a row per node with calls waiting (what waits).
# Written only on PostgreSQL, by nodes whose lanes have limits.
MIGRATIONS.append((
    21,
    "shared rate limits",
    """
CREATE TABLE limit_lanes (
    lane         {text} PRIMARY KEY,
    rpm_tat      {real} NOT NULL DEFAULT 0,
    tpm_tat      {real} NOT NULL DEFAULT 0,
    paused_until {real} NOT NULL DEFAULT 0,
    granted      {bigint} NOT NULL DEFAULT 0
);
CREATE TABLE limit_slots (
    lane       {text} NOT NULL,
    slot       {bigint} NOT NULL,
    holder     {text},
    node_id    {text},
    expires_at {real} NOT NULL DEFAULT 0,
    PRIMARY KEY (lane, slot)
);
CREATE TABLE limit_demand (
    lane    {text} NOT NULL,
    node_id {text} NOT NULL,
    demand  {text} NOT NULL,
    until   {real} NOT NULL,
    PRIMARY KEY (lane, node_id)
);
""",
))

# Migration 22: node liveness (agentd.runtime.nodes). Each node on PostgreSQL holds a
# session-level advisory lock (``lock_key``: a hash of the schema and the node id)
# on a connection of its own for as long as its process lives, and registers here:
# another node that finds a registered node's lock free while it holds unexpired
# leases knows the node is gone (its server dropped the connection and the lock with
# it) and ends those leases at once, instead of waiting for them to expire. A node
# that is not registered (an older version) is only ever taken over by expiry.
# SQLite (one daemon per home) has the table but never uses it.
MIGRATIONS.append((
    22,
    "node liveness",
    """
CREATE TABLE node_liveness (
    id         {text} PRIMARY KEY,
    lock_key   {bigint} NOT NULL,
    started_at {real} NOT NULL
);
""",
))

# Migration 23: named secrets (agentd.secrets): a value per (tenant, agent, name),
# ``agent`` '' for a secret of the whole tenant. ``value`` is the AES-GCM nonce and
# ciphertext (base64; the scope and name are its associated data, so a row copied to
# another scope does not decrypt); ``key_id`` tells which key sealed it.
MIGRATIONS.append((
    23,
    "named secrets",
    """
CREATE TABLE secrets (
    tenant     {text} NOT NULL,
    agent      {text} NOT NULL,
    name       {text} NOT NULL,
    value      {text} NOT NULL,
    key_id     {text} NOT NULL,
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL,
    PRIMARY KEY (tenant, agent, name)
);
""",
))

# Migration 24: what an agent was at each change (agentd.runtime.replay): a row per
# version of its model, instructions, tools and settings, written with the change. A
# replay reads the version a run started with, not the agent as it is now. Agents
# made before this migration have no row until their next change.
MIGRATIONS.append((
    24,
    "agent revisions",
    """
CREATE TABLE agent_revisions (
    agent_id     {text} NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    at           {real} NOT NULL,
    model        {text} NOT NULL,
    instructions {text} NOT NULL,
    tools        {text} NOT NULL,
    settings     {text} NOT NULL,
    PRIMARY KEY (agent_id, at)
);
""",
))

# Migration 25: OAuth for MCP servers (agentd.secrets.oauth). ``oauth_flows``: a login
# started and not finished, by the SHA-256 of its ``state`` (the state itself is only
# in the authorization link): whose it is (tenant, agent, the MCP server's name in the
# agent's settings, the principal that started it), what finishing it needs (the PKCE
# verifier, the client, the authorization server's endpoints: sealed with the secrets
# key, as a secret is, ``key_id`` naming the key) and until when it may finish. A
# callback deletes its row in the transaction that reads it: a state is used once.
# ``oauth_locks``: who is refreshing which token (a secret's tenant, agent and name)
# until when, so that one node at a time spends a refresh token (a rotated one spent
# twice makes the authorization server revoke the whole grant). The tokens themselves
# are secrets (the ``secrets`` table), named ``_mcp_oauth.<hash>``.
MIGRATIONS.append((
    25,
    "oauth for mcp servers",
    """
CREATE TABLE oauth_flows (
    state_hash {text} PRIMARY KEY,
    tenant     {text} NOT NULL,
    agent      {text} NOT NULL,
    server     {text} NOT NULL,
    principal  {text} NOT NULL,
    data       {text} NOT NULL,
    key_id     {text} NOT NULL,
    created_at {real} NOT NULL,
    expires_at {real} NOT NULL
);
CREATE INDEX oauth_flows_agent ON oauth_flows (tenant, agent, server);
CREATE TABLE oauth_locks (
    tenant     {text} NOT NULL,
    agent      {text} NOT NULL,
    name       {text} NOT NULL,
    holder     {text} NOT NULL,
    expires_at {real} NOT NULL,
    PRIMARY KEY (tenant, agent, name)
);
""",
))

# Migration 26: images and files messages carry (agentd.store.blobs). ``blobs`` holds
# each tenant's bytes once, by their SHA-256: two tenants sending the same file each
# have their copy, so that no tenant can learn or read what another holds by its
# hash, and each pays for its own in its ``storage_bytes`` quota. ``blob_refs`` says
# which sessions refer to which blob (a row per session and blob, whatever the number
# of events naming it), written in the transaction of the event that names it and
# gone with the session (a fork copies its source's); a blob no session refers to
# any more is deleted in the transaction that dropped its last reference. A session
# reads a blob only through a reference of its own.
MIGRATIONS.append((
    26,
    "blobs",
    {dialect: f"""
CREATE TABLE blobs (
    tenant     {{text}} NOT NULL,
    sha256     {{text}} NOT NULL,
    media_type {{text}} NOT NULL,
    size       {{bigint}} NOT NULL,
    width      {{bigint}},
    height     {{bigint}},
    data       {kind} NOT NULL,
    created_at {{real}} NOT NULL,
    PRIMARY KEY (tenant, sha256)
);
CREATE TABLE blob_refs (
    session_id {{text}} NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    tenant     {{text}} NOT NULL,
    sha256     {{text}} NOT NULL,
    PRIMARY KEY (session_id, sha256)
);
CREATE INDEX blob_refs_blob ON blob_refs (tenant, sha256);
""" for dialect, kind in (("sqlite", "BLOB"), ("postgresql", "BYTEA"))},
))

# Migration 27: forks and evaluations (agentd.runtime.fork, agentd.evals). ``forks``:
# a run forked onto another configuration from a step (its scratch session and run,
# and what it needs to run without the original: the original run's events, the step,
# the candidate); deleted with its session. ``eval_suites`` (one agent's), their
# ``eval_cases`` (each self-contained: the context, the message and the recorded
# baseline copied from the run it was picked from, and its graders), ``eval_runs`` (a
# suite forked onto a candidate) and their ``eval_results``, one per case: the queue
# of an eval run's cases (``queued`` rows survive a restart) and what each became.
# A result names its case without a foreign key: deleting a case leaves the results
# of past runs as they were.
MIGRATIONS.append((
    27,
    "forks and evaluations",
    """
CREATE TABLE forks (
    id          {text} PRIMARY KEY,
    agent_id    {text} NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    session_id  {text} NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    run_id      {text} NOT NULL,
    source_run  {text},
    spec        {text} NOT NULL,
    created_at  {real} NOT NULL
);
CREATE INDEX forks_session ON forks (session_id);
CREATE INDEX forks_run ON forks (run_id);
CREATE TABLE eval_suites (
    id          {text} PRIMARY KEY,
    agent_id    {text} NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    name        {text} NOT NULL,
    description {text} NOT NULL DEFAULT '',
    gate        {text} NOT NULL DEFAULT '{{}}',
    created_at  {real} NOT NULL,
    updated_at  {real} NOT NULL,
    UNIQUE (agent_id, name)
);
CREATE TABLE eval_cases (
    id          {text} PRIMARY KEY,
    suite_id    {text} NOT NULL REFERENCES eval_suites(id) ON DELETE CASCADE,
    n           {bigint} NOT NULL,
    name        {text} NOT NULL,
    source      {text} NOT NULL,
    input       {text} NOT NULL,
    baseline    {text} NOT NULL,
    graders     {text} NOT NULL,
    from_step   {bigint} NOT NULL DEFAULT 1,
    created_at  {real} NOT NULL,
    UNIQUE (suite_id, n)
);
CREATE TABLE eval_runs (
    id            {text} PRIMARY KEY,
    suite_id      {text} NOT NULL REFERENCES eval_suites(id) ON DELETE CASCADE,
    n             {bigint} NOT NULL,
    status        {text} NOT NULL,
    candidate     {text} NOT NULL,
    priority      {text} NOT NULL,
    concurrency   {bigint} NOT NULL,
    keep_sessions {bigint} NOT NULL DEFAULT 0,
    cases         {bigint} NOT NULL DEFAULT 0,
    summary       {text},
    created_at    {real} NOT NULL,
    started_at    {real},
    finished_at   {real},
    UNIQUE (suite_id, n)
);
CREATE TABLE eval_results (
    eval_run_id {text} NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
    case_id     {text} NOT NULL,
    n           {bigint} NOT NULL,
    case_name   {text} NOT NULL,
    status      {text} NOT NULL,
    run_id      {text},
    session_key {text},
    claimed_by  {text},
    claimed_at  {real},
    detail      {text},
    finished_at {real},
    PRIMARY KEY (eval_run_id, case_id)
);
CREATE INDEX eval_runs_open ON eval_runs (created_at)
    WHERE status IN ('queued', 'running', 'cancelling');
CREATE INDEX eval_results_queued ON eval_results (eval_run_id, n) WHERE status = 'queued';
CREATE INDEX eval_results_running ON eval_results (claimed_by) WHERE status = 'running';
""",
))

# Migration 28: full text ranked with each namespace's own statistics, the same way on
# both stores (agentd.store._text, _fulltext). ``memory_postings`` holds a row per
# (namespace, term, entry): the term's count in the entry and the entry's length in
# terms, found by its primary key; ``memory_text_ns`` holds each namespace's entries
# and terms, ``memory_text_df`` its entries per term; every write keeps the three in
# its transaction. An entry keeps its distinct terms (``text_terms``) and its length
# (``text_len``), so that removing it takes away what adding it counted. They replace
# SQLite's FTS5 index (whose BM25 counted every namespace's entries together) and
# PostgreSQL's ``english`` ``tsvector`` (its own words, ranked otherwise). Existing
# entries are indexed by the Python step that follows (:data:`STEPS`).
_TEXT_29 = """
ALTER TABLE memory_entries ADD COLUMN text_terms {text};
ALTER TABLE memory_entries ADD COLUMN text_len {bigint};
CREATE TABLE memory_text_df (
    ns    {bigint} NOT NULL,
    term  {text} NOT NULL,
    docs  {bigint} NOT NULL,
    PRIMARY KEY (ns, term)
){clustered};
CREATE TABLE memory_postings (
    ns    {bigint} NOT NULL,
    term  {text} NOT NULL,
    n     {bigint} NOT NULL,
    tf    {bigint} NOT NULL,
    len   {bigint} NOT NULL,
    PRIMARY KEY (ns, term, n)
){clustered};
"""
MIGRATIONS.append((
    28,
    "full text with each namespace's own statistics (agentd.store._text)",
    {
        "sqlite": """
DROP TRIGGER memory_entries_fts_insert;
DROP TRIGGER memory_entries_fts_delete;
DROP TRIGGER memory_entries_fts_update;
DROP TABLE memory_fts;
ALTER TABLE memory_entries DROP COLUMN fts_ns;
CREATE TABLE memory_text_ns (
    id        INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL UNIQUE,
    docs      INTEGER NOT NULL,
    tokens    INTEGER NOT NULL
);
""" + _TEXT_29,
        "postgresql": """
ALTER TABLE memory_entries DROP COLUMN content_tsv;
CREATE TABLE memory_text_ns (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace TEXT NOT NULL UNIQUE,
    docs      BIGINT NOT NULL,
    tokens    BIGINT NOT NULL
);
""" + _TEXT_29,
    },
))


# Migration 29: runs_session_active's condition as an OR of equalities
# (agentd.store.rows.active), the same runs, rows and order. SQLite evaluates the
# condition of a partial index for every row a statement inserts or updates (the old
# row and the new), and it built the IN list it was into an ephemeral B-tree each time:
# four a turn of a message (the run's insert; the update that ends it, with its own
# IN list), about 6 % of the turn's instructions. The queries that use the index name
# its condition in the same words, and plan as before on both engines.
MIGRATIONS.append((
    29,
    "runs_session_active's condition without an IN list",
    """
DROP INDEX runs_session_active;
CREATE INDEX runs_session_active ON runs (session_id, queued_seq)
    WHERE (status = 'queued' OR status = 'running' OR status = 'waiting_approval');
""",
))


def _index_entries_28(tx: Tx, dialect: str) -> None:
    from agentd.store import _text

    _text.index_existing(tx)


#: Python steps run right after their migration's SQL, in the same transaction.
STEPS: dict[int, Callable[[Tx, str], None]] = {28: _index_entries_28}
