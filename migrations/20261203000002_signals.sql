-- Signals: named JSON payloads sent to a mission. One per (mission, name): a second one for the
-- same wait is refused. A signal may arrive before the mission waits for it; it is kept until the
-- wait consumes it.
create table signals (
    mission_id  uuid not null references missions (id),
    name        text not null,
    payload     jsonb not null,
    received_at timestamptz not null default now(),
    primary key (mission_id, name)
);

alter type step_kind add value 'signal';

alter table events drop constraint events_type_known;
alter table events add constraint events_type_known check (type in (
    'mission_submitted', 'mission_started', 'mission_resumed', 'mission_released',
    'mission_suspended', 'mission_cancel_requested', 'mission_succeeded', 'mission_failed',
    'mission_cancelled', 'mission_retried',
    'step_started', 'step_succeeded', 'step_failed', 'step_retry_scheduled', 'step_skipped',
    'step_compensated',
    'timer_started', 'timer_fired',
    'approval_requested', 'approval_granted', 'approval_rejected',
    'signal_waiting', 'signal_received',
    'compensation_started', 'compensation_failed'
));
