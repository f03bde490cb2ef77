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
under a root daemon. No foreign key: a row outlives its agent, so that a uid is never
given to a second one (``agentd.store._uids``).

Migration 7 adds core memory blocks (``agentd.store._blocks``): ``memory_blocks``
(the value, its limit and read-only flag, a version bumped by every write),
``agent_blocks`` (which agents see a block, under which label: unique per agent, and
in which order) and ``block_versions`` (every version's value and who wrote it, so
any write can be seen and undone). A block is shared by linking it to more agents.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

MIGRATIONS: list[tuple[int, str, str]] = [
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
