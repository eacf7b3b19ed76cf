-- A succeeded charge not captured yet (an authorisation) ranks a step before its capture, at pending's step
-- (projections/handlers/ordering.py): `charge.succeeded` of a payment authorised and `charge.captured` in one second
-- tied on rank and the event id chose, which could leave the authorisation (nothing captured: gross 0). The newest
-- states stored before of charges not captured move down the same step, so a capture arriving now wins over them.
-- Only those rows change (authorisations not captured are few); captured charges, their refunded states and their
-- refunds keep their ranks, which the new rule gives them too. The step is 2 × 10^12 in a stored rank
-- ((progress × 10^12 + refunded) × 2 + from event); progress 2 is succeeded or failed.
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;
UPDATE charges SET state_rank = state_rank - 2000000000000
 WHERE status = 'succeeded' AND NOT captured AND state_rank / 2000000000000 = 2;
