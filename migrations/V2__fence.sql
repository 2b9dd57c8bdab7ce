-- A claim's fencing token: raised by every take-over, so a holder that lost its claim (its lease
-- ended while it waited) can no longer renew it, record a run on it, or settle it.
ALTER TABLE builds ADD COLUMN fence BIGINT NOT NULL DEFAULT 1;
