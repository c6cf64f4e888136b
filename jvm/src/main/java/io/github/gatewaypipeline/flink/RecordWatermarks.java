package io.github.gatewaypipeline.flink;

import java.time.Duration;

import org.apache.flink.api.common.eventtime.TimestampAssigner;
import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.common.eventtime.WatermarkGenerator;
import org.apache.flink.api.common.eventtime.WatermarkOutput;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.util.clock.RelativeClock;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.types.Row;

/**
 * Event time for the parse's records: one row per Kafka record, its events' times in an array.
 *
 * <p>A record's timestamp is its latest event's time, and the watermark trails the latest time
 * seen by the out-of-orderness bound, as a per-event bounded-out-of-orderness watermark would:
 * the largest time over the records is the largest over their events. So the job generates the
 * events' watermarks once per record, before the unnest, without converting every event between
 * SQL and a DataStream for it.
 *
 * <p>A record that gave no event (only dead letters) neither moves the watermark nor counts as
 * activity: a source subtask that receives only unusable records goes idle after the idle
 * timeout, like one that receives nothing, and does not hold back every window of the job.
 */
public final class RecordWatermarks {
    /** The timestamp of a record that gave no event. */
    public static final long NO_EVENTS = Long.MIN_VALUE;

    private RecordWatermarks() {}

    /**
     * Assigns timestamps and watermarks to {@code records}, whose field {@code timesField} holds
     * its events' times (epoch ms).
     */
    public static DataStream<Row> apply(
            DataStream<Row> records,
            String timesField,
            long outOfOrdernessMs,
            long idleTimeoutMs,
            String uid,
            String name) {
        WatermarkStrategy<Row> strategy =
                WatermarkStrategy.<Row>forGenerator(
                                ctx ->
                                        new Generator(
                                                outOfOrdernessMs,
                                                idleTimeoutMs,
                                                ctx.getInputActivityClock()))
                        .withTimestampAssigner(ctx -> new LatestEvent(timesField));
        return records.assignTimestampsAndWatermarks(strategy).uid(uid).name(name);
    }

    /** The latest of the record's event times, or {@link #NO_EVENTS}. */
    static final class LatestEvent implements TimestampAssigner<Row> {
        private final String field;

        LatestEvent(String field) {
            this.field = field;
        }

        @Override
        public long extractTimestamp(Row record, long recordTimestamp) {
            Object times = record.getField(field);
            long latest = NO_EVENTS;
            // An array of Longs; its class (Long[] or Object[]) depends on the conversion.
            if (times instanceof Object[]) {
                for (Object t : (Object[]) times) {
                    if (t != null) {
                        latest = Math.max(latest, ((Number) t).longValue());
                    }
                }
            } else if (times != null) {
                throw new IllegalStateException(
                        field + " is a " + times.getClass().getName() + ", not an array");
            }
            return latest;
        }
    }

    /**
     * Bounded out-of-orderness with idleness, where only records with events are activity.
     * Flink's {@code withIdleness} counts every record, also one without events. Idleness is
     * timed on the input-activity clock, as Flink's own, which stops while the task is
     * backpressured: a subtask with records queued behind backpressure is not idle.
     */
    static final class Generator implements WatermarkGenerator<Row> {
        private final long bound;
        private final long idleTimeoutNanos;
        private final RelativeClock clock;
        private long latest = Long.MIN_VALUE;
        private long lastActivity;
        private boolean idle;

        Generator(long bound, long idleTimeoutMs, RelativeClock clock) {
            this.bound = bound;
            this.idleTimeoutNanos = Duration.ofMillis(idleTimeoutMs).toNanos();
            this.clock = clock;
            this.lastActivity = clock.relativeTimeNanos();
        }

        @Override
        public void onEvent(Row record, long timestamp, WatermarkOutput output) {
            if (timestamp == NO_EVENTS) {
                return;
            }
            latest = Math.max(latest, timestamp);
            lastActivity = clock.relativeTimeNanos();
            if (idle) {
                idle = false;
                output.markActive();
            }
        }

        @Override
        public void onPeriodicEmit(WatermarkOutput output) {
            if (idle) {
                return;
            }
            long quiet = clock.relativeTimeNanos() - lastActivity;
            if (idleTimeoutNanos > 0 && quiet >= idleTimeoutNanos) {
                idle = true;
                output.markIdle();
                return;
            }
            if (latest != Long.MIN_VALUE) {
                output.emitWatermark(new Watermark(latest - bound));
            }
        }
    }
}
