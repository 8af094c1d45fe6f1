-- A completed Checkout Session looks up the `charge.refunded` events already stored for its
-- payment intent (a refund may arrive before the completion it refunds): this finds them
-- without reading every stored event. The expression is the one the lookup uses.
create index stripe_events_refunds_by_payment_intent on stripe_events (
    (coalesce(payload #>> '{data,object,payment_intent,id}', payload #>> '{data,object,payment_intent}'))
) where type = 'charge.refunded';
