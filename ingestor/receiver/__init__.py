"""Webhook deliveries in: check the request, find the tenant by its URL token, verify Stripe's signature."""
