-- The node that holds a live call's state, so other nodes can route requests for it there.
ALTER TABLE call_sessions ADD COLUMN host_node text;
