package io.github.gatewaypipeline.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import java.util.stream.Collectors;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.operators.KeyedProcessOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.util.KeyedOneInputStreamOperatorTestHarness;
import org.apache.flink.types.Row;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * {@link UsageWindows.NewlyFailing}: a client's failing windows pass only where it began to fail,
 * and its state is gone once it has been quiet for the quiet span.
 */
class NewlyFailingTest {
    private static final long WINDOW = 10_000;
    private static final long QUIET = 60 * WINDOW;

    private KeyedOneInputStreamOperatorTestHarness<String, Row, Row> harness;

    @BeforeEach
    void open() throws Exception {
        // A window record as the shared signal reads it: the rate key, then the window start.
        harness = new KeyedOneInputStreamOperatorTestHarness<>(
                new KeyedProcessOperator<>(new UsageWindows.NewlyFailing(1, WINDOW, QUIET)),
                row -> (String) row.getField(0),
                Types.STRING);
        harness.open();
    }

    @AfterEach
    void close() throws Exception {
        harness.close();
    }

    private void failing(String client, long window) throws Exception {
        harness.processElement(new StreamRecord<>(Row.of(client, window), window + WINDOW - 1));
    }

    private List<String> passed() {
        List<String> out = harness.extractOutputValues().stream()
                .map(row -> row.getField(0) + "@" + (Long) row.getField(1) / WINDOW)
                .collect(Collectors.toList());
        harness.getOutput().clear();
        return out;
    }

    @Test
    void aClientCountsInItsFirstFailingWindowOnly() throws Exception {
        failing("client:a", 0);
        failing("client:b", 0);
        failing("client:a", WINDOW);
        failing("client:a", 30 * WINDOW);
        failing("client:b", 59 * WINDOW);
        assertEquals(List.of("client:a@0", "client:b@0"), passed());
    }

    @Test
    void aGapOfTheQuietSpanIsNotNewAndALongerOneIs() throws Exception {
        failing("client:a", 0);
        // The watermark just before the first timer: the state is still there for the next window.
        harness.processWatermark(QUIET + WINDOW - 1);
        failing("client:a", QUIET); // exactly the quiet span after: still the same run
        failing("client:a", 2 * QUIET + WINDOW); // more than it: begins to fail again
        assertEquals(List.of("client:a@0", "client:a@121"), passed());
    }

    @Test
    void aWindowSeenAgainOrOutOfOrderIsIgnored() throws Exception {
        failing("client:a", 5 * WINDOW);
        failing("client:a", 5 * WINDOW);
        failing("client:a", 2 * WINDOW);
        assertEquals(List.of("client:a@5"), passed());
    }

    @Test
    void theStateIsClearedOnceTheClientHasBeenQuiet() throws Exception {
        failing("client:a", 0);
        failing("client:a", 10 * WINDOW);
        assertEquals(1, harness.numKeyedStateEntries());
        assertEquals(1, harness.numEventTimeTimers()); // one timer, set when it began to fail
        harness.processWatermark(QUIET + WINDOW); // the first timer: it failed again since
        assertEquals(1, harness.numKeyedStateEntries());
        assertEquals(1, harness.numEventTimeTimers()); // set again, for its last window
        harness.processWatermark(10 * WINDOW + QUIET + WINDOW - 1);
        assertEquals(1, harness.numKeyedStateEntries());
        harness.processWatermark(10 * WINDOW + QUIET + WINDOW);
        assertEquals(0, harness.numKeyedStateEntries());
        assertEquals(0, harness.numEventTimeTimers());
        failing("client:a", 10 * WINDOW + QUIET + WINDOW);
        assertEquals(List.of("client:a@0", "client:a@71"), passed());
    }
}
