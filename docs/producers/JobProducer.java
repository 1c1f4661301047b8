// JobProducer.java — enqueue kjobs jobs from Java with kafka-clients + Apache Avro.
//
// Usage (from a directory holding schemas/job.avsc): java JobProducer BOOTSTRAP KEY...
// Sends one email.send job per KEY to the topic "jobs" in Avro single-object encoding
// (BinaryMessageEncoder: C3 01, the schema's CRC-64-AVRO fingerprint, the binary body);
// throws unless every job was acknowledged. Keyed records use Java's murmur2 partitioner,
// the one kjobs follows. Build: tests/producers/pom.xml (see docs/producers.md).
import java.io.File;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.Future;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class JobProducer {
  public static void main(String[] args) throws Exception {
    Schema schema = new Schema.Parser().parse(new File("schemas/job.avsc"));
    BinaryMessageEncoder<GenericRecord> encoder =
        new BinaryMessageEncoder<>(GenericData.get(), schema);

    Properties props = new Properties();
    props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    props.put(ProducerConfig.ACKS_CONFIG, "all"); // idempotent by default since Kafka 3.0
    props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
    props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);

    try (KafkaProducer<String, byte[]> producer = new KafkaProducer<>(props)) {
      List<Future<RecordMetadata>> sent = new ArrayList<>();
      for (int i = 1; i < args.length; i++) {
        String key = args[i];
        GenericRecord job = new GenericData.Record(schema);
        job.put("id", UUID.randomUUID().toString());
        job.put("type", "email.send");
        job.put("payload", ByteBuffer.wrap(("welcome " + key).getBytes(StandardCharsets.UTF_8)));
        job.put("created_at", System.currentTimeMillis()); // timestamp-millis: a long
        job.put("meta", Map.of("producer", "java"));
        ByteBuffer encoded = encoder.encode(job);
        byte[] value = new byte[encoded.remaining()];
        encoded.get(value);
        sent.add(producer.send(new ProducerRecord<>("jobs", key, value)));
      }
      producer.flush();
      for (Future<RecordMetadata> f : sent) {
        f.get(); // throws if this job was not acknowledged
      }
    }
  }
}
