-- elvon config store, schema version 1. Applied by `ConfigStore::migrate`, which records it
-- in elvon_schema_migrations; never edit an applied migration, add the next one instead.

-- Every config document ever published, valid or not.
CREATE TABLE elvon_configs (
    id          bigserial   PRIMARY KEY,
    -- The document's `version` ('' when it had none it could be stored under).
    version     text        NOT NULL,
    -- The document exactly as published.
    document    text        NOT NULL,
    author      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    state       text        NOT NULL
                CHECK (state IN ('candidate', 'active', 'rejected', 'retired')),
    -- Validation problems of a rejected document (JSON: [{"path": ..., "message": ...}]);
    -- the non-fatal warnings of an accepted one.
    problems    text        NOT NULL DEFAULT '[]'
);

-- One stored (not rejected) document per version, and at most one active at a time.
CREATE UNIQUE INDEX elvon_configs_version ON elvon_configs (version) WHERE state <> 'rejected';
CREATE UNIQUE INDEX elvon_configs_one_active ON elvon_configs ((true)) WHERE state = 'active';

-- Each time a config became active. `previous` is the activation a rollback returns to:
-- the one that was current when this one was made (for a rollback, the previous of the
-- activation it returned to), so repeated rollbacks walk back in order.
CREATE TABLE elvon_activations (
    id          bigserial   PRIMARY KEY,
    config_id   bigint      NOT NULL REFERENCES elvon_configs (id),
    previous    bigint      REFERENCES elvon_activations (id),
    action      text        NOT NULL CHECK (action IN ('activate', 'rollback')),
    actor       text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);

-- Every change, with who made it (an admin token's name, or the caller's `actor`).
CREATE TABLE elvon_audit (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    action      text        NOT NULL CHECK (action IN ('publish', 'reject', 'activate', 'rollback')),
    version     text        NOT NULL,
    detail      text        NOT NULL DEFAULT ''
);
