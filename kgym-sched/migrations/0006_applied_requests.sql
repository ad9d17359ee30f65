-- kgym scheduler state, version 6: requests that must not apply twice.
--
-- A worker on RabbitMQ sends its log lines as an RPC request, which the
-- scheduler acks after answering. A scheduler killed between committing
-- the lines and the ack gets the same message again (from the broker, on
-- its next start): without a record of what was applied, the lines would
-- be appended twice. The request's id (its AMQP correlation id) is
-- inserted in the same transaction as the lines; a second delivery finds
-- it and applies nothing. Rows older than a day are pruned as new ones
-- come in (a redelivery comes within the RPC timeout).
CREATE TABLE applied_requests (
    id TEXT PRIMARY KEY,
    at_us INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX applied_requests_at ON applied_requests (at_us);
