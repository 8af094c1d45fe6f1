-- An event's type is one of the engine's `EventType` names, the wire names of the history and
-- the event stream. The column stays text (every query, trigger and index on it is unchanged);
-- this constraint refuses any other name, so a reader can rely on parsing every stored type.
-- Adding an event type means a migration that drops and re-adds this constraint with the new
-- name; engine/tests/event_types.rs compares the list below with `EventType::ALL`.
-- Existing rows are checked as the constraint is added: every writer has only ever written
-- these names.
alter table events add constraint events_type_known check (type in (
    'mission_submitted', 'mission_started', 'mission_resumed', 'mission_released',
    'mission_suspended', 'mission_cancel_requested', 'mission_succeeded', 'mission_failed',
    'mission_cancelled', 'mission_retried',
    'step_started', 'step_succeeded', 'step_failed', 'step_retry_scheduled', 'step_skipped',
    'step_compensated',
    'timer_started', 'timer_fired',
    'approval_requested', 'approval_granted', 'approval_rejected',
    'compensation_started', 'compensation_failed'
));
