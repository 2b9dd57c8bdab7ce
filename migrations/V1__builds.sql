-- One row per build kfleet claimed: an identity and driver version, the request id nodes were
-- given, and where the build stands. At most one row per identity and driver version is open
-- (claimed or dispatched): that unique index is what makes a claim atomic across processes and
-- replicas. Times are milliseconds since the Unix epoch.
CREATE TABLE builds (
    request_id     TEXT NOT NULL,
    key            TEXT NOT NULL,
    driver_version TEXT NOT NULL,
    phase          TEXT NOT NULL,
    run_id         BIGINT,
    url            TEXT,
    conclusion     TEXT,
    owner          TEXT,
    lease_until    BIGINT,
    accepted_at    BIGINT NOT NULL,
    dispatched_at  BIGINT,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (request_id, key, driver_version)
);
CREATE UNIQUE INDEX builds_open ON builds (key, driver_version)
    WHERE phase IN ('claimed', 'dispatched');
CREATE INDEX builds_request ON builds (request_id);
CREATE INDEX builds_updated ON builds (updated_at);
