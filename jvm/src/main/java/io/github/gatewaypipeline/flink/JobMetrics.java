package io.github.gatewaypipeline.flink;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.Gauge;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * The job's own metrics that are counted in the JVM, where the rows they count already flow: a
 * pass-through step that forwards every row and counts some. Chained to the operator before it,
 * so it costs a method call per row, not a hand-off, and never a crossing into Python.
 *
 * <p>Metric names are the ones docs/operations.md ("Metrics") and the Grafana dashboard read.
 */
public final class JobMetrics {
    /** Events whose usage window had closed when they arrived (they become late corrections). */
    public static final String LATE_EVENTS = "late_events";
    /** Gateway retries the SQL marked as duplicates (role {@code dup}) and kept out of usage. */
    public static final String DEDUPLICATED_RETRIES = "deduplicated_retries";
    /**
     * Processing time minus the watermark of the events the usage windows read, in ms, as of the
     * latest event; NaN before the first watermark. Measured on the events stream (the retries'
     * step), which carries the windows' event time: the detector's input does not, as its SQL
     * conversion does not forward watermarks.
     */
    public static final String WATERMARK_LAG_MS = "watermark_lag_ms";

    private JobMetrics() {}

    /**
     * {@code rows} unchanged, counting in the counter {@code metric} those whose field {@code
     * field} equals {@code value} (every row if {@code field} is negative); with {@code
     * watermarkLag}, also the gauge {@value #WATERMARK_LAG_MS} of their watermark.
     */
    public static SingleOutputStreamOperator<Row> countRows(
            DataStream<Row> rows,
            int field,
            String value,
            String metric,
            boolean watermarkLag,
            String uid,
            String name) {
        return rows.process(new CountRows(field, value, metric, watermarkLag))
                .returns(rows.getType())
                .uid(uid)
                .name(name);
    }

    static final class CountRows extends ProcessFunction<Row, Row> {
        private final int field;
        private final String value;
        private final String metric;
        private final boolean watermarkLag;
        private transient Counter counter;
        /** As of the latest row; Long.MIN_VALUE before the first watermark. */
        private transient volatile long watermark;

        CountRows(int field, String value, String metric, boolean watermarkLag) {
            this.field = field;
            this.value = value;
            this.metric = metric;
            this.watermarkLag = watermarkLag;
        }

        @Override
        public void open(OpenContext openContext) {
            MetricGroup group = getRuntimeContext().getMetricGroup();
            counter = group.counter(metric);
            watermark = Long.MIN_VALUE;
            if (watermarkLag) {
                group.gauge(WATERMARK_LAG_MS, (Gauge<Double>) this::lagMs);
            }
        }

        /** NaN until there is a watermark: no lag is known, and 0 would claim none. */
        double lagMs() {
            long wm = watermark;
            return wm == Long.MIN_VALUE ? Double.NaN : (double) (System.currentTimeMillis() - wm);
        }

        @Override
        public void processElement(Row row, Context ctx, Collector<Row> out) {
            if (field < 0 || value.equals(row.getField(field))) {
                counter.inc();
            }
            if (watermarkLag) {
                watermark = ctx.timerService().currentWatermark();
            }
            out.collect(row);
        }
    }
}
