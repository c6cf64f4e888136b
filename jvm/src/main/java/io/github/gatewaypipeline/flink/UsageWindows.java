package io.github.gatewaypipeline.flink;

import java.time.Duration;
import java.util.Arrays;
import java.util.List;

import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ReducingState;
import org.apache.flink.api.common.state.ReducingStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.api.java.typeutils.RowTypeInfo;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.triggers.Trigger;
import org.apache.flink.streaming.api.windowing.triggers.TriggerResult;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * Tumbling event-time usage windows per rate key, with the late split in the window operator.
 *
 * <p>Flink's window operator decides, per event, whether its window is still open against its
 * own watermark, and hands a late event to a side output instead of dropping it: every event is
 * counted exactly once, by its window or by a late correction. A SQL window aggregate drops late
 * rows silently, and a lateness test run by any operator before it judges against another
 * watermark: after an input was idle (a quiet partition, a broker outage) the window's
 * watermark can be ahead of that test's, and the rows it let through are lost.
 *
 * <p>The trigger also fires a window early, without purging it, on the event that takes its
 * auth failures to a threshold, so the detector can alert before the window closes. Rows are
 * read and written by field name; the Python stage declarations (schemas/stages.py) own them.
 */
public final class UsageWindows {
    public static final String KIND_WINDOW = "window";
    public static final String KIND_EARLY = "early";
    public static final String KIND_SHARED = "shared";

    private final SingleOutputStreamOperator<Row> windows;
    private final DataStream<Row> late;

    private UsageWindows(SingleOutputStreamOperator<Row> windows, DataStream<Row> late) {
        this.windows = windows;
        this.late = late;
    }

    /** Window records (kind window or early), one row per fire. */
    public SingleOutputStreamOperator<Row> windows() {
        return windows;
    }

    /** The events whose window had closed when they arrived, unchanged. */
    public DataStream<Row> late() {
        return late;
    }

    /**
     * Applies the windows to {@code events}, whose rows begin with the fields {@code inputNames}
     * (rate_key, consumer, key_fingerprint, country, auth_failed, units, path, client_prefix, in
     * any order) and whose record timestamps are the event times.
     *
     * @param thresholds auth-failure counts at which an open window fires early (may be empty)
     * @param maxNetworks distinct client networks are counted up to this many per window, so a
     *     window's state stays bounded however many networks call it
     * @param outputType the window record's fields: k, ws, consumer, key_fingerprint, count,
     *     units, auth_failures, countries, networks, paths, kind (in any order)
     */
    public static UsageWindows apply(
            DataStream<Row> events,
            TypeInformation<Row> inputType,
            String[] inputNames,
            int windowMs,
            long[] thresholds,
            int maxNetworks,
            RowTypeInfo outputType,
            String uid,
            String name) {
        Fields in = new Fields(inputNames);
        OutputTag<Row> lateTag = new OutputTag<>("late-events", inputType);
        SingleOutputStreamOperator<Row> windows =
                events.keyBy(new RateKey(in.index("rate_key")), Types.STRING)
                        .window(TumblingEventTimeWindows.of(Duration.ofMillis(windowMs)))
                        .trigger(new EarlyAuthFailures(in.index("auth_failed"), thresholds))
                        .sideOutputLateData(lateTag)
                        .aggregate(
                                new Count(in, maxNetworks),
                                new Emit(new Fields(outputType.getFieldNames())),
                                TypeInformation.of(Acc.class),
                                TypeInformation.of(Acc.class),
                                outputType)
                        .uid(uid)
                        .name(name);
        // Counted where the window operator splits them off: the late stream is small, and its
        // count is what an operator watches to tune the out-of-orderness bound.
        DataStream<Row> late =
                JobMetrics.countRows(
                        windows.getSideOutput(lateTag),
                        -1,
                        "",
                        JobMetrics.LATE_EVENTS,
                        false,
                        uid + "-late-events",
                        name + ": late events");
        return new UsageWindows(windows, late);
    }

    /**
     * The shared signal: per window, over the clients the gateway could not identify (rate keys
     * starting with {@code clientPrefix}), how many began to fail and how often. A client counts
     * in its first window with rejected calls after {@code quietMs} without one ({@link
     * NewlyFailing}): a client that keeps failing (a job with a revoked key, or a single guesser,
     * which its own rate key's rules judge) counts once, and does not raise the level a campaign
     * of new clients is judged against. Keyed by {@code sharedKey}: one window record per
     * window, kind {@code shared}, whose {@code count} is those clients, {@code auth_failures}
     * their rejected calls and {@code countries} theirs.
     *
     * <p>It is derived from {@code windows}, the usage windows' records: a key's closed windows
     * come in event-time order, so whether a client is new does not depend on the order its
     * events arrived in. Distributed key guessing is one signal here while each client of it is
     * far below any per-client threshold. A derived signal, not usage: a late correction is not
     * added to it.
     */
    public static SingleOutputStreamOperator<Row> sharedFailures(
            DataStream<Row> windows,
            int windowMs,
            long quietMs,
            String clientPrefix,
            String sharedKey,
            RowTypeInfo recordType,
            String uid,
            String name) {
        Fields rec = new Fields(recordType.getFieldNames());
        int key = rec.index("k");
        int kind = rec.index("kind");
        int authFailures = rec.index("auth_failures");
        return windows.filter(
                        row ->
                                KIND_WINDOW.equals(row.getField(kind))
                                        && row.getField(key) instanceof String k
                                        && k.startsWith(clientPrefix)
                                        && row.getField(authFailures) instanceof Long n
                                        && n > 0)
                .name(name + ": windows of failing unidentified clients")
                .keyBy(new RateKey(key), Types.STRING)
                .process(new NewlyFailing(rec.index("ws"), windowMs, quietMs))
                .returns(recordType)
                .uid(uid + "-newly-failing")
                .name(name + ": newly failing clients")
                .keyBy(row -> sharedKey, Types.STRING)
                .window(TumblingEventTimeWindows.of(Duration.ofMillis(windowMs)))
                .aggregate(
                        new Clients(rec),
                        new EmitShared(rec),
                        TypeInformation.of(ClientsAcc.class),
                        TypeInformation.of(ClientsAcc.class),
                        recordType)
                .uid(uid)
                .name(name);
    }

    /**
     * Per client, its closed window records (in event-time order, as the usage windows emit a
     * key's), passed on only where it began to fail: the first, and each after more than {@code
     * quietMs} (window starts) without one. One long per client that failed in the last {@code
     * quietMs}; an event-time timer clears it after.
     */
    static final class NewlyFailing extends KeyedProcessFunction<String, Row, Row> {
        private final int ws;
        private final long windowMs;
        private final long quietMs;
        private transient ValueState<Long> last;

        NewlyFailing(int ws, long windowMs, long quietMs) {
            this.ws = ws;
            this.windowMs = windowMs;
            this.quietMs = quietMs;
        }

        @Override
        public void open(OpenContext ctx) {
            last = getRuntimeContext().getState(
                    new ValueStateDescriptor<>("last-failing-window", Types.LONG));
        }

        @Override
        public void processElement(Row row, Context ctx, Collector<Row> out) throws Exception {
            long window = (Long) row.getField(ws);
            Long before = last.value();
            if (before != null && window <= before) {
                return; // a guard: a key's closed windows come once each, in order
            }
            last.update(window);
            if (before == null || window - before > quietMs) {
                out.collect(row);
                ctx.timerService().registerEventTimeTimer(window + quietMs + windowMs);
            }
        }

        @Override
        public void onTimer(long time, OnTimerContext ctx, Collector<Row> out) throws Exception {
            Long window = last.value();
            if (window == null) {
                return;
            }
            if (time - windowMs - window >= quietMs) {
                last.clear();
            } else {
                // It failed again since: look again when that window is quietMs old.
                ctx.timerService().registerEventTimeTimer(window + quietMs + windowMs);
            }
        }
    }

    /** The newly failing clients of a window so far. A POJO, so that Flink serializes it without Kryo. */
    public static final class ClientsAcc {
        public long failures;
        public java.util.HashSet<String> clients = new java.util.HashSet<>();
        public java.util.TreeSet<String> countries = new java.util.TreeSet<>();

        public ClientsAcc() {}
    }

    static final class Clients implements AggregateFunction<Row, ClientsAcc, ClientsAcc> {
        private final int key;
        private final int authFailures;
        private final int countries;

        Clients(Fields rec) {
            key = rec.index("k");
            authFailures = rec.index("auth_failures");
            countries = rec.index("countries");
        }

        @Override
        public ClientsAcc createAccumulator() {
            return new ClientsAcc();
        }

        @Override
        public ClientsAcc add(Row row, ClientsAcc acc) {
            acc.failures += (Long) row.getField(authFailures);
            acc.clients.add((String) row.getField(key));
            if (row.getField(countries) instanceof String[] cs) {
                acc.countries.addAll(Arrays.asList(cs));
            }
            return acc;
        }

        @Override
        public ClientsAcc getResult(ClientsAcc acc) {
            return acc;
        }

        @Override
        public ClientsAcc merge(ClientsAcc a, ClientsAcc b) {
            throw new UnsupportedOperationException("tumbling windows never merge");
        }
    }

    static final class EmitShared
            extends ProcessWindowFunction<ClientsAcc, Row, String, TimeWindow> {
        private final Fields out;

        EmitShared(Fields out) {
            this.out = out;
        }

        @Override
        public void process(
                String key, Context ctx, Iterable<ClientsAcc> accs, Collector<Row> collector) {
            ClientsAcc acc = accs.iterator().next();
            Row row = new Row(out.size());
            row.setField(out.index("k"), key);
            row.setField(out.index("ws"), ctx.window().getStart());
            row.setField(out.index("count"), (long) acc.clients.size());
            row.setField(out.index("auth_failures"), acc.failures);
            row.setField(out.index("countries"), acc.countries.toArray(new String[0]));
            // Each client key is one network (a /24, or a /64 for IPv6): the networks are the
            // clients.
            row.setField(out.index("networks"), (long) acc.clients.size());
            row.setField(out.index("kind"), KIND_SHARED);
            collector.collect(row);
        }
    }

    /** Field positions by name, resolved once. */
    static final class Fields implements java.io.Serializable {
        private final List<String> names;

        Fields(String[] names) {
            this.names = List.of(names);
        }

        int index(String name) {
            int i = names.indexOf(name);
            if (i < 0) {
                throw new IllegalArgumentException("no field " + name + " in " + names);
            }
            return i;
        }

        int size() {
            return names.size();
        }
    }

    static final class RateKey implements KeySelector<Row, String> {
        private final int field;

        RateKey(int field) {
            this.field = field;
        }

        @Override
        public String getKey(Row row) {
            return (String) row.getField(field);
        }
    }

    /** A window so far. A POJO, so that Flink serializes it without Kryo. */
    public static final class Acc {
        public long count;
        public double units;
        public boolean hasUnits;
        public long authFailures;
        /** Distinct, sorted. */
        public String[] countries = new String[0];
        /** The distinct client networks (/24, /48), sorted, at most the cap. */
        public String[] networks = new String[0];
        /**
         * The calls per request path of a key that billing prices (a consumer or a key
         * fingerprint; never an anonymous client's, whose paths nothing reads): distinct sorted
         * paths, and their calls at the same index. Arrays, not a map, so that the POJO
         * serializer holds them without Kryo.
         */
        public String[] paths = new String[0];

        public long[] pathCalls = new long[0];
        /** The smallest seen, as the SQL it replaces took them (deterministic on replay). */
        public String consumer;
        public String fingerprint;

        public Acc() {}
    }

    private static String min(String a, String b) {
        if (a == null) {
            return b;
        }
        return b == null || a.compareTo(b) <= 0 ? a : b;
    }

    private static String[] inserted(String[] sorted, int at, String value) {
        String[] grown = new String[sorted.length + 1];
        System.arraycopy(sorted, 0, grown, 0, at);
        grown[at] = value;
        System.arraycopy(sorted, at, grown, at + 1, sorted.length - at);
        return grown;
    }

    static final class Count implements AggregateFunction<Row, Acc, Acc> {
        private final int consumer;
        private final int fingerprint;
        private final int country;
        private final int authFailed;
        private final int units;
        private final int path;
        private final int network;
        private final int maxNetworks;

        Count(Fields in, int maxNetworks) {
            consumer = in.index("consumer");
            fingerprint = in.index("key_fingerprint");
            country = in.index("country");
            authFailed = in.index("auth_failed");
            units = in.index("units");
            path = in.index("path");
            network = in.index("client_prefix");
            this.maxNetworks = maxNetworks;
        }

        @Override
        public Acc createAccumulator() {
            return new Acc();
        }

        @Override
        public Acc add(Row row, Acc acc) {
            acc.count++;
            Object u = row.getField(units);
            if (u != null) {
                acc.units += ((Number) u).doubleValue();
                acc.hasUnits = true;
            }
            if (Boolean.TRUE.equals(row.getField(authFailed))) {
                acc.authFailures++;
            }
            String c = (String) row.getField(country);
            if (c != null) {
                int at = Arrays.binarySearch(acc.countries, c);
                if (at < 0) {
                    acc.countries = inserted(acc.countries, -at - 1, c);
                }
            }
            String net = (String) row.getField(network);
            if (net != null && acc.networks == null) {
                // An accumulator restored from a savepoint taken before it counted networks.
                acc.networks = new String[0];
            }
            if (net != null && acc.networks.length < maxNetworks) {
                int at = Arrays.binarySearch(acc.networks, net);
                if (at < 0) {
                    acc.networks = inserted(acc.networks, -at - 1, net);
                }
            }
            String cons = (String) row.getField(consumer);
            String fp = (String) row.getField(fingerprint);
            acc.consumer = min(acc.consumer, cons);
            acc.fingerprint = min(acc.fingerprint, fp);
            String p = (String) row.getField(path);
            if (p != null && (cons != null || fp != null)) {
                int at = Arrays.binarySearch(acc.paths, p);
                if (at >= 0) {
                    acc.pathCalls[at]++;
                } else {
                    int ins = -at - 1;
                    acc.paths = inserted(acc.paths, ins, p);
                    long[] calls = new long[acc.pathCalls.length + 1];
                    System.arraycopy(acc.pathCalls, 0, calls, 0, ins);
                    calls[ins] = 1;
                    System.arraycopy(acc.pathCalls, ins, calls, ins + 1, acc.pathCalls.length - ins);
                    acc.pathCalls = calls;
                }
            }
            return acc;
        }

        @Override
        public Acc getResult(Acc acc) {
            return acc;
        }

        @Override
        public Acc merge(Acc a, Acc b) {
            throw new UnsupportedOperationException("tumbling windows never merge");
        }
    }

    static final class Emit extends ProcessWindowFunction<Acc, Row, String, TimeWindow> {
        private final int size;
        private final int k;
        private final int ws;
        private final int consumer;
        private final int fingerprint;
        private final int count;
        private final int units;
        private final int authFailures;
        private final int countries;
        private final int networks;
        private final int paths;
        private final int kind;

        Emit(Fields out) {
            size = out.size();
            k = out.index("k");
            ws = out.index("ws");
            consumer = out.index("consumer");
            fingerprint = out.index("key_fingerprint");
            count = out.index("count");
            units = out.index("units");
            authFailures = out.index("auth_failures");
            countries = out.index("countries");
            networks = out.index("networks");
            paths = out.index("paths");
            kind = out.index("kind");
        }

        @Override
        public void process(String key, Context ctx, Iterable<Acc> accs, Collector<Row> out) {
            Acc acc = accs.iterator().next();
            TimeWindow w = ctx.window();
            Row row = new Row(size);
            row.setField(k, key);
            row.setField(ws, w.getStart());
            row.setField(consumer, acc.consumer);
            row.setField(fingerprint, acc.fingerprint);
            row.setField(count, acc.count);
            row.setField(units, acc.hasUnits ? acc.units : null);
            row.setField(authFailures, acc.authFailures);
            row.setField(countries, acc.countries.clone());
            row.setField(networks, acc.networks == null ? 0L : (long) acc.networks.length);
            // Null, not empty, where no path was counted: as a late correction's.
            java.util.Map<String, Long> calls = null;
            if (acc.paths.length > 0) {
                calls = new java.util.LinkedHashMap<>();
                for (int i = 0; i < acc.paths.length; i++) {
                    calls.put(acc.paths[i], acc.pathCalls[i]);
                }
            }
            row.setField(paths, calls);
            // Fired by its end-of-window timer once the watermark has passed, else early.
            boolean closed = ctx.currentWatermark() >= w.maxTimestamp();
            row.setField(kind, closed ? KIND_WINDOW : KIND_EARLY);
            out.collect(row);
        }
    }

    /** EventTimeTrigger, plus an early fire when the auth failures reach a threshold. */
    static final class EarlyAuthFailures extends Trigger<Row, TimeWindow> {
        private final int authFailed;
        private final long[] thresholds;
        private final ReducingStateDescriptor<Long> failures =
                new ReducingStateDescriptor<>("auth-failures", Long::sum, Types.LONG);

        EarlyAuthFailures(int authFailed, long[] thresholds) {
            this.authFailed = authFailed;
            this.thresholds = thresholds.clone();
            Arrays.sort(this.thresholds);
        }

        @Override
        public TriggerResult onElement(Row row, long timestamp, TimeWindow w, TriggerContext ctx)
                throws Exception {
            ctx.registerEventTimeTimer(w.maxTimestamp());
            if (thresholds.length == 0 || !Boolean.TRUE.equals(row.getField(authFailed))) {
                return TriggerResult.CONTINUE;
            }
            ReducingState<Long> state = ctx.getPartitionedState(failures);
            state.add(1L);
            return Arrays.binarySearch(thresholds, state.get()) >= 0
                    ? TriggerResult.FIRE
                    : TriggerResult.CONTINUE;
        }

        @Override
        public TriggerResult onEventTime(long time, TimeWindow w, TriggerContext ctx) {
            return time == w.maxTimestamp() ? TriggerResult.FIRE : TriggerResult.CONTINUE;
        }

        @Override
        public TriggerResult onProcessingTime(long time, TimeWindow w, TriggerContext ctx) {
            return TriggerResult.CONTINUE;
        }

        @Override
        public void clear(TimeWindow w, TriggerContext ctx) {
            ctx.deleteEventTimeTimer(w.maxTimestamp());
            ctx.getPartitionedState(failures).clear();
        }
    }
}
