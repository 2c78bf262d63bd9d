-- crossed_replies: every reading call that received the reply of another call (connection tier): the read
-- numbered read_no r in its segment got the reply of call number r (27_queued_calls). Reads with
-- read_no = call_no got their own reply and are not listed.
CREATE OR REPLACE TEMPORARY VIEW crossed_replies AS
SELECT
    r.line_id,
    p.line_id AS reply_line_id
FROM queued_calls AS r
INNER JOIN queued_calls AS p
    ON r.conn_no = p.conn_no
    AND r.segment_no = p.segment_no
    AND r.read_no = p.call_no
WHERE r.read_no IS NOT NULL
    AND r.read_no <> r.call_no;
