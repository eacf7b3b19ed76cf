-- A charge captured after its authorisation ranks one lifecycle step past its state not captured
-- (projections/handlers/ordering.py): `charge.succeeded` of a payment authorised and `charge.captured` in one second
-- tied on rank, and the event id chose, which could leave the authorisation (nothing captured: gross 0). Ranks stored
-- before move the same step, so a state written before this meets one written after on the same scale: a charge's
-- newest state when it is succeeded and captured; every refunded state (only a captured charge has refunds); every
-- refund (listed on a captured charge). The step is 2 × 10^12 in a stored rank ((progress × 10^12 + refunded) × 2 +
-- from event); progress 2 is succeeded or failed.
SET LOCAL search_path TO projection;
UPDATE charges SET state_rank = state_rank + 2000000000000
 WHERE status = 'succeeded' AND captured AND state_rank / 2000000000000 = 2;
UPDATE charge_refund_states SET state_rank = state_rank + 2000000000000
 WHERE amount_refunded > 0 AND state_rank / 2000000000000 = 2;
UPDATE refunds SET state_rank = state_rank + 2000000000000
 WHERE state_rank / 2000000000000 = 2;
