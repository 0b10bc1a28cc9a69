-- What another node needs to take a call over when its host drains or dies: where each
-- participant's connection is (so the connections that survive keep their place), and
-- whether the call may still switch itself to the SFU. Both nullable or defaulted, so
-- nodes of the previous release keep working beside the new ones during a rolling upgrade.
ALTER TABLE call_participants
    ADD COLUMN connection_id   text,
    ADD COLUMN connection_node text;

ALTER TABLE call_sessions
    ADD COLUMN auto_mode boolean NOT NULL DEFAULT false;

-- The takeover scan: live calls by host.
CREATE INDEX call_sessions_live_host ON call_sessions (host_node) WHERE state <> 'ended';
