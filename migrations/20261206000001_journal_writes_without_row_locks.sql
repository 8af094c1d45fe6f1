-- Journal entries and history events no longer carry foreign keys to their mission. A foreign key
-- check locks the referenced row (`for key share`), and a row lock is a WAL record of its own: one
-- more record, and a trigger and a lookup per inserted row, in every transaction that writes a
-- step or an event (measured: one `Heap/LOCK` on `missions` per write, about a seventh of a
-- step's WAL records). The reference still holds by construction: every transaction that inserts
-- steps or events first inserts, updates or locks their mission row (the group commit inserts
-- only for the missions its fenced update matched), and missions are never deleted.
alter table steps drop constraint steps_mission_id_fkey;
alter table events drop constraint events_mission_id_fkey;
