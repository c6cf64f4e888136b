package io.github.gatewaypipeline.flink;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.java.typeutils.RowTypeInfo;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.types.Row;

/**
 * Rows paired with their key, (key, row), in the JVM: the input that a PyFlink keyed operator
 * reads after {@code key_by}.
 *
 * <p>PyFlink's {@code key_by} computes the key in a Python operator of its own, one crossing
 * into Python per row, before the keyed Python function crosses again. When the key is a field
 * of the row, this map does it in the JVM, and the keyed function is the only crossing.
 */
public final class KeyedRows {
    private KeyedRows() {}

    /** {@code rows} as (key, row), the key being the row's field {@code keyField}. */
    public static DataStream<Row> pairWithKey(
            DataStream<Row> rows,
            String keyField,
            TypeInformation<Row> pairType,
            String uid,
            String name) {
        int index = ((RowTypeInfo) rows.getType()).getFieldIndex(keyField);
        if (index < 0) {
            throw new IllegalArgumentException("no field " + keyField + " in " + rows.getType());
        }
        return rows.map(new PairWithKey(index)).returns(pairType).uid(uid).name(name);
    }

    static final class PairWithKey implements MapFunction<Row, Row> {
        private final int index;

        PairWithKey(int index) {
            this.index = index;
        }

        @Override
        public Row map(Row row) {
            return Row.of(row.getField(index), row);
        }
    }
}
