# OrderWatch: one image for the consumer, the relay and the demo simulator.
FROM python:3.11-slim
WORKDIR /opt/orderwatch
COPY . .
RUN pip install --no-cache-dir . && mkdir -p /var/lib/orderwatch
ENV ORDERWATCH_DISPLAY_TIMEZONE=Asia/Shanghai
ENTRYPOINT ["orderwatch"]
CMD ["--help"]
