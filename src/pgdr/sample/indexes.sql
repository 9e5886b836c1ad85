CREATE INDEX chatbots_user_id_idx ON chatbots (user_id);
CREATE INDEX chatbots_status_idx ON chatbots (status);
CREATE INDEX subscriptions_user_id_idx ON subscriptions (user_id);
CREATE INDEX conversations_chatbot_id_idx ON conversations (chatbot_id);
CREATE INDEX messages_conversation_id_idx ON messages (conversation_id);
CREATE INDEX embeddings_chatbot_id_idx ON embeddings (chatbot_id);
CREATE INDEX knowledge_base_chatbot_id_idx ON knowledge_base (chatbot_id);
