-- A running mission's row is rewritten by every step (its sequence counter and timestamps), and
-- a step's row by every attempt. None of those writes touch an indexed column, so PostgreSQL can
-- update in place on the same page (a HOT update: no index entries written) when the page has
-- room. Leaving a third of each page free makes that the common case.
alter table missions set (fillfactor = 70);
alter table steps set (fillfactor = 70);
