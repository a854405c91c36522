-- The durable mail queue (issue 17): a transactional outbox. A claim email
-- is inserted in the same transaction as the claim attempt it belongs to,
-- and delivered from here by whichever replica takes it first (PostgreSQL:
-- FOR UPDATE SKIP LOCKED), so a crash between the commit and the SMTP
-- server loses nothing. Times are milliseconds.
CREATE TABLE mail_outbox (
    id              TEXT PRIMARY KEY,       -- mal_<time-ordered id>
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    -- The message, holding the claim link: cleared once sent, given up or
    -- expired, and never kept past the link's expiry.
    body_text       TEXT,
    body_html       TEXT,
    status          TEXT NOT NULL,          -- pending | sent | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- When it may next be tried. Taking a message for delivery moves this
    -- forward by a lease, so no other replica takes it meanwhile; a
    -- replica that dies mid-delivery leaves it to be taken again then.
    next_attempt_at INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,          -- the link's expiry
    created_at      INTEGER NOT NULL,
    done_at         INTEGER,                   -- sent or given up
    last_error      TEXT
);
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX mail_outbox_done ON mail_outbox (done_at) WHERE status <> 'pending';
