-- ensure_monthly_partitions(parent, start_month, months_ahead): create missing <parent>_<YYYY_MM> partitions
-- covering [month start, next month start) in the session time zone; returns how many it created.
CREATE FUNCTION ensure_monthly_partitions(parent regclass, start_month date, months_ahead int)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    base_name   text := replace(parent::text, '.', '_');
    month_start timestamptz;
    month_end   timestamptz;
    part_name   text;
    created     int := 0;
BEGIN
    IF months_ahead < 1 THEN
        RAISE EXCEPTION 'months_ahead must be at least 1, got %', months_ahead;
    END IF;
    FOR i IN 0 .. months_ahead - 1 LOOP
        month_start := date_trunc('month', start_month::timestamptz) + make_interval(months => i);
        month_end := month_start + interval '1 month';
        part_name := base_name || '_' || to_char(month_start, 'YYYY_MM');
        IF to_regclass(part_name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                           part_name, parent, month_start, month_end);
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;
